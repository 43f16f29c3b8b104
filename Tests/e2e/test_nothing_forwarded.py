"""Nothing of a refused request reaches any upstream (hardening.md §A), with the pool warm as well
as cold: every byte already read is parsed before anything of a request is written upstream, so a
request refused for its framing in the same read leaves no trace at the origin, which records
every byte it receives."""
import socket
import time

import pytest

from conftest import free_port, recv_all, recv_exactly, recv_head
from helpers import config, router
from origin import RecordingOrigin
from test_hardening import SMUGGLING

CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
HIDDEN = b"GET /internal/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

# §A.13 chunk sizes (seven spellings), §A.14 chunk lines and data, each with a request hidden behind.
FRAMING = {
    "chunk size 0x5": CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk size of twenty Fs": CHUNKED + b"F" * 20 + b"\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk size 2^64+5": CHUNKED + b"10000000000000005\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk size -5": CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk size with a leading space": CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk size with a trailing space": CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "5000-digit chunk size": CHUNKED + b"0" * 4999 + b"5\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk extension with a bare LF": CHUNKED + b"5;a\nxx\r\nhello\r\n0\r\n\r\n" + HIDDEN,
    "chunk data without its CRLF": CHUNKED + b"5\r\nhelloXX0\r\n\r\n" + HIDDEN,
    "a valid chunk, then garbage": CHUNKED + b"5\r\nhello\r\nzz\r\n" + HIDDEN,
}
CASES = {**{f"head: {k}": v for k, v in SMUGGLING.items()}, **FRAMING}


@pytest.fixture
def recorded(moongate):
    """Moongate on one event loop (one pool), in front of a recording origin."""
    origin = RecordingOrigin()
    port = free_port()
    moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{origin.port}"},
                    top={"event_loop_threads": 1}), port)
    yield port, origin
    origin.close()


def get(port, path):
    """One request on its own client connection; returns the status line and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        head, rest = recv_head(s)
        length = int([l for l in head.split("\r\n") if l.lower().startswith("content-length:")][0].split(":")[1])
        return head.split("\r\n")[0], rest + recv_exactly(s, length - len(rest))


def wait_until(predicate, timeout=3.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def warm_the_pool(port, origin):
    """Two requests from two client connections share one upstream connection: the pool holds an
    idle connection to the origin (checked, so no test below can pass on a cold pool)."""
    assert get(port, "/warm-1") == ("HTTP/1.1 200 OK", b"/warm-1")
    assert get(port, "/warm-2") == ("HTTP/1.1 200 OK", b"/warm-2")
    assert len(origin.connections) == 1, "the pool did not keep the upstream connection"
    return origin.received()


def refuse(port, raw):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(raw)
    data = recv_all(s, timeout=3)
    s.close()
    return data


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_refused_request_sends_nothing_through_a_warm_pool(recorded, name):
    port, origin = recorded
    before = warm_the_pool(port, origin)
    answer = refuse(port, CASES[name])
    assert answer.startswith(b"HTTP/1.1 400"), (name, answer[:80])
    assert answer.count(b"HTTP/1.1") == 1, answer  # nothing after the refusal is answered
    time.sleep(0.3)
    assert origin.received() == before, (name, origin.received()[len(before):][:200])
    assert get(port, "/after")[0] == "HTTP/1.1 200 OK"
    assert origin.requests == [("GET", "/warm-1"), ("GET", "/warm-2"), ("GET", "/after")]


@pytest.mark.parametrize("name", sorted(FRAMING))
def test_a_refused_request_sends_nothing_on_a_fresh_connection(recorded, name):
    port, origin = recorded
    answer = refuse(port, FRAMING[name])
    assert answer.startswith(b"HTTP/1.1 400"), (name, answer[:80])
    time.sleep(0.3)
    assert origin.received() == b"", name
    assert get(port, "/after")[0] == "HTTP/1.1 200 OK"
    assert origin.requests == [("GET", "/after")]


@pytest.mark.parametrize("name", sorted(FRAMING))
def test_a_refused_request_after_a_good_one_on_the_same_connection_sends_nothing(recorded, name):
    port, origin = recorded
    before = warm_the_pool(port, origin)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = recv_head(s)
        assert head.startswith("HTTP/1.1 200") and recv_exactly(s, 6 - len(rest)) + rest == b"/first"
        sent = origin.received()
        assert sent.startswith(before) and b"GET /first " in sent[len(before):]
        s.sendall(FRAMING[name])
        answer = recv_all(s, timeout=3)
    assert answer.startswith(b"HTTP/1.1 400"), (name, answer[:80])
    time.sleep(0.3)
    assert origin.received() == sent, (name, origin.received()[len(sent):][:200])
    assert [r[1] for r in origin.requests] == ["/warm-1", "/warm-2", "/first"]


def test_a_valid_chunked_request_still_goes_through_the_warm_pool(recorded):
    """The positive control: the same route, a well-formed chunked body, one read."""
    port, origin = recorded
    warm_the_pool(port, origin)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(CHUNKED + b"5\r\nhello\r\n0\r\n\r\n")
        head, rest = recv_head(s)
        assert head.startswith("HTTP/1.1 200")
    assert wait_until(lambda: ("POST", "/") in origin.requests)
    assert len(origin.connections) == 1
    assert origin.received().endswith(b"5\r\nhello\r\n0\r\n\r\n")
