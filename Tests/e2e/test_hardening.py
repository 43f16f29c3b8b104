"""Hardening §A strict parsing and §E sizes and slow clients:
every malformed head gets a 4xx and a closed connection, and nothing reaches the origin."""
import socket
import time

import pytest

from conftest import free_port, recv_all, recv_head
from helpers import config, router
from origin import Origin


@pytest.fixture
def proxied(moongate):
    origin = Origin()
    port = free_port()
    moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{origin.port}"},
                    timeouts={"request_headers": "1s"}), port)
    yield port, origin
    origin.close()


SMUGGLING = {
    "CL.TE": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "duplicate differing Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
    "Content-Length +5": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "Content-Length 0x5": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
    "TE xchunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "space before colon": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: x\n\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "invalid field name": b"GET / HTTP/1.1\r\nHost: x\r\nX@A: 1\r\n\r\n",
    "two Host headers": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "chunk size overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
    "space in request-target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "TE.CL": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    "TE chunked, identity": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "TE with vertical tab": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "two TE headers": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    "Content-Length -5": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
    "Content-Length 40 digits": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\nhello",
    "Content-Length list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello",
    "empty Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\nhello",
    "bare CR": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "chunk size -5": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk size 0x5": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk extension with bare LF": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nxx\r\nhello\r\n0\r\n\r\n",
    "missing CRLF after chunk data": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "chunk size with trailing space": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    "5000-digit chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 4999 + b"5\r\nhello\r\n0\r\n\r\n",
    "NUL in request-target": b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    "quoted TE": b'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_a_malformed_requests_get_400_and_nothing_is_forwarded(proxied, name):
    port, origin = proxied
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(SMUGGLING[name])
    data = recv_all(s, timeout=3)
    assert data.startswith(b"HTTP/1.1 400"), (name, data[:80])
    assert origin.requests == [], name


def test_a_empty_line_before_a_request_is_ignored(proxied):
    port, origin = proxied
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\r\n")
    time.sleep(0.1)  # the empty line arrives in a read of its own
    s.sendall(b"GET /after-empty-line HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert recv_all(s, timeout=5).startswith(b"HTTP/1.1 200")
    assert [r[1] for r in origin.requests] == ["/after-empty-line"]


OVER_LIMITS = {  # hardening.md §1.5 edge limits, §E.5–7, and HTTP versions other than 1.x
    "e6 too many headers": (431, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n"),
    "e5 oversized header": (431, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n"),
    "e5 field over 8 KiB": (431, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (9 * 1024) + b"\r\n\r\n"),
    "e7 huge request line": (414, b"GET /" + b"a" * (9 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "HTTP/2.0 request line": (505, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
}


@pytest.mark.parametrize("name", sorted(OVER_LIMITS))
def test_limits_and_versions_get_their_status_and_nothing_is_forwarded(proxied, name):
    port, origin = proxied
    status, raw = OVER_LIMITS[name]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(raw)
    assert recv_all(s, timeout=3).startswith(b"HTTP/1.1 %d" % status), name
    assert origin.requests == [], name


def test_e1_slowloris_gets_408(proxied):
    port, _ = proxied
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    start = time.time()
    data = recv_all(s, timeout=4)
    assert data.startswith(b"HTTP/1.1 408")
    assert time.time() - start < 3.5


def test_a_valid_request_still_works_after_the_attacks(proxied):
    port, origin = proxied
    for raw in SMUGGLING.values():
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(raw)
        recv_all(s, timeout=2)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert recv_all(s, timeout=5).startswith(b"HTTP/1.1 200")
