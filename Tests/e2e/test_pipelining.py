"""Pipelining and informational responses: a refused pipelined request is answered in its turn,
after the responses ahead of it, and nothing of it is forwarded; 1xx answers (100 Continue,
103 Early Hints) reach the client with their fields, hop-by-hop ones removed."""
import socket
import time

import pytest

from conftest import free_port, recv_all, recv_exactly, recv_head
from helpers import config, router
from origin import RecordingOrigin


def slow_first(method, path, headers, body, conn):
    if path == "/slow":
        time.sleep(1.0)
    payload = path.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)


def start(moongate, origin, **timeouts):
    port = free_port()
    moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{origin.port}"},
                    timeouts=timeouts or None), port)
    return port


def responses(data):
    """Splits a byte stream into (status line, headers dict, body) by Content-Length."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(headers.get("content-length", ["0"])[0]) if not lines[0].split(" ")[1].startswith("1") else 0
        out.append((lines[0], headers, rest[:length]))
        data = rest[length:]
    return out


SECOND = {
    "invalid field name": b"GET /second HTTP/1.1\r\nHost: x\r\nX@A: 1\r\n\r\n",
    "bare LF": b"GET /second HTTP/1.1\nHost: x\n\n",
    "chunk size 0x5": b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "chunk data without its CRLF":
        b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SECOND))
def test_a_malformed_pipelined_request_is_refused_after_the_response_ahead_of_it(moongate, name):
    origin = RecordingOrigin(slow_first)
    try:
        port = start(moongate, origin)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + SECOND[name])
        answers = responses(recv_all(s, timeout=5))
        assert [a[0].split(" ")[1] for a in answers] == ["200", "400"], answers
        assert answers[0][2] == b"/slow"  # the first response is whole
        assert answers[1][1]["connection"] == ["close"]
        assert origin.requests == [("GET", "/slow")]
        assert b"/second" not in origin.received()
    finally:
        origin.close()


FIRST = {
    "no body": b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
    "a Content-Length body": b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "a chunked body": b"POST /slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("first", sorted(FIRST))
def test_a_pipelined_head_that_never_ends_gets_408_after_the_response_ahead(moongate, first):
    """The second head starts in the read that ends the first request: its 500 ms deadline runs
    from there (not the keep-alive one), and its 408 waits for the first response."""
    origin = RecordingOrigin(slow_first)
    try:
        port = start(moongate, origin, request_headers="500ms", keepalive_idle="30s")
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(FIRST[first] + b"GET /second HTTP/1.1\r\nHost: x\r\n")
        started = time.time()
        answers = responses(recv_all(s, timeout=5))
        assert [a[0].split(" ")[1] for a in answers] == ["200", "408"], answers
        assert answers[0][2] == b"/slow"
        assert time.time() - started < 3
        assert [r[1] for r in origin.requests] == ["/slow"]
    finally:
        origin.close()


def test_a_locally_answered_request_then_a_head_that_never_ends_gets_408(moongate):
    """The same when the first answer is the proxy's own (no route: 404, written in the same read)."""
    origin = RecordingOrigin()
    try:
        port = free_port()
        moongate(config(port, [router([("app.test", "/", "origin")])], clusters={"origin": f"127.0.0.1:{origin.port}"},
                        timeouts={"request_headers": "500ms", "keepalive_idle": "30s"}), port)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: other.test\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n")
        started = time.time()
        answers = responses(recv_all(s, timeout=5))
        assert [a[0].split(" ")[1] for a in answers] == ["404", "408"], answers
        assert time.time() - started < 3
        assert origin.requests == []
    finally:
        origin.close()


def test_a_refusal_after_a_head_request_carries_its_body(moongate):
    """The 400 that follows the answer to a HEAD has the body its Content-Length announces."""
    origin = RecordingOrigin(slow_first)
    try:
        port = start(moongate, origin)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"HEAD /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\nX@A: 1\r\n\r\n")
        data = recv_all(s, timeout=5)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")  # no body: it answers a HEAD
        refusal = responses(rest)
        assert [a[0].split(" ")[1] for a in refusal] == ["400"], rest
        assert len(refusal[0][2]) == int(refusal[0][1]["content-length"][0]) > 0
    finally:
        origin.close()


def test_good_pipelined_requests_behind_a_slow_one_are_all_answered_in_order(moongate):
    origin = RecordingOrigin(slow_first)
    try:
        port = start(moongate, origin)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                  b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(recv_all(s, timeout=5))
        assert [a[2] for a in answers] == [b"/slow", b"/b", b"/c"]
    finally:
        origin.close()


def early_hints(method, path, headers, body, conn):
    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
                 b"Link: </app.js>; rel=preload; as=script\r\nConnection: X-Hint-Secret\r\nX-Hint-Secret: 1\r\n"
                 b"Keep-Alive: timeout=5\r\n\r\n")
    time.sleep(0.2)
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nLink: </style.css>; rel=preload\r\n\r\nok"


def test_103_early_hints_is_relayed_with_its_link_fields(moongate):
    origin = RecordingOrigin(early_hints)
    try:
        port = start(moongate, origin)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(recv_all(s, timeout=5))
        assert [a[0] for a in answers] == ["HTTP/1.1 103 Early Hints", "HTTP/1.1 200 OK"], answers
        hints = answers[0][1]
        assert hints["link"] == ["</style.css>; rel=preload; as=style", "</app.js>; rel=preload; as=script"]
        assert "x-hint-secret" not in hints and "connection" not in hints and "keep-alive" not in hints
        assert answers[1][2] == b"ok"
    finally:
        origin.close()


def test_an_http10_client_gets_no_1xx(moongate):
    origin = RecordingOrigin(early_hints)
    try:
        port = start(moongate, origin)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /page HTTP/1.0\r\nHost: x\r\n\r\n")
        data = recv_all(s, timeout=5)
        assert data.startswith(b"HTTP/1.1 200"), data[:80]
        assert b" 103 " not in data
    finally:
        origin.close()


def test_100_continue_is_relayed_with_its_fields_before_the_body_is_sent(moongate, servers):
    def continuing(server, conn):
        head, rest = recv_head(conn)
        server.received.append(head)
        assert "expect: 100-continue" in head.lower()
        conn.sendall(b"HTTP/1.1 100 Continue\r\nX-Continue: yes\r\n\r\n")
        body = rest + recv_exactly(conn, 5 - len(rest))
        server.received.append(body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    upstream = servers(continuing)
    port = free_port()
    moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{upstream.port}"}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    head, rest = recv_head(s)
    assert head.split("\r\n")[0] == "HTTP/1.1 100 Continue", head
    assert "x-continue: yes" in head.lower()
    assert rest == b""
    s.sendall(b"hello")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    assert rest + recv_exactly(s, 5 - len(rest)) == b"hello"
