"""HTTP/2 → HTTP/1.1 (hardening.md §B, RFC 9113 §8.1.1-§8.3): every malformed request is a stream
error (RST_STREAM PROTOCOL_ERROR) or a 4xx and never reaches the origin; well-formed requests keep
their fields; request trailers go on as chunked trailers. Raw HEADERS with hand-made HPACK literals
(the hpack package, no validation on our side) over h2c."""
import socket
import time

import hpack
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame

from conftest import ThreadedServer, free_port
from test_http2 import PLUGIN
from test_http2_floods import Raw, rss
from test_http2_limits import config

PROTOCOL_ERROR = 0x1
COMPRESSION_ERROR = 0x9
BASE = [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/ok")]


class RecordingOrigin:
    """Records each request's raw bytes (head, body and trailers) and answers 200."""

    def __init__(self):
        self.raw = []
        self.server = ThreadedServer(self._serve)
        self.port = self.server.port

    def _serve(self, server, conn):
        data = b""
        conn.settimeout(5)
        while True:
            while b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                lower = head.lower()
                if b"transfer-encoding: chunked" in lower:
                    end = rest.find(b"\r\n0\r\n")
                    end = rest.find(b"\r\n\r\n", end + 3 if end >= 0 else 0) if not rest.startswith(b"0\r\n") else rest.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    message, data = head + b"\r\n\r\n" + rest[:end + 4], rest[end + 4:]
                elif b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        break
                    message, data = head + b"\r\n\r\n" + rest[:length], rest[length:]
                else:
                    message, data = head + b"\r\n\r\n", rest
                self.raw.append(message)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            data += chunk

    def close(self):
        self.server.close()


@pytest.fixture
def proxy(moongate, tmp_path):
    origin = RecordingOrigin()
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    mg = moongate(config(port, origin.port, plugin), port)
    yield port, origin
    assert mg.proc.poll() is None
    origin.close()


def send_block(port, fields, end_stream=True, body=None, pause=0.0, more=None):
    """Sends one request with exactly these fields (no normalisation); returns the connection after
    the stream's answer: a response HEADERS, a RST_STREAM or a GOAWAY. `body` goes as one DATA
    frame; with `more`, that frame does not end the stream and, after `pause` seconds (time for an
    upstream to answer a request it had whole), `more` follows in a DATA frame that does."""
    raw = Raw(port)
    encoder = hpack.Encoder()
    frame = HeadersFrame(1)
    frame.data = b"".join(encoder.encode([(name.encode("latin-1"), value.encode("latin-1"))], huffman=False)
                          for name, value in fields)
    frame.flags.add("END_HEADERS")
    if end_stream and body is None:
        frame.flags.add("END_STREAM")
    raw.send(frame)
    if body is not None:
        raw.send(DataFrame(1, data=body, flags=["END_STREAM"] if end_stream and more is None else []))
    if more is not None:
        time.sleep(pause)
        raw.send(DataFrame(1, data=more, flags=["END_STREAM"]))
    raw.read(lambda f: isinstance(f, GoAwayFrame) or (f.stream_id == 1 and isinstance(f, (RstStreamFrame, HeadersFrame))))
    return raw


def refused(raw):
    """A stream error PROTOCOL_ERROR, a connection error, or a 4xx status."""
    last = raw.frames[-1] if raw.frames else None
    if isinstance(last, RstStreamFrame):
        return last.error_code == PROTOCOL_ERROR
    if isinstance(last, GoAwayFrame):
        return last.error_code in (PROTOCOL_ERROR, COMPRESSION_ERROR)
    if isinstance(last, HeadersFrame):
        status = dict(hpack.Decoder().decode(last.data)).get(":status", "")
        return status.startswith("4")
    return False


MALFORMED = {
    "b2 transfer-encoding": BASE + [("transfer-encoding", "chunked")],
    "b3 CR in a value": BASE + [("x-a", "a\rb")],
    "b3 LF in a value": BASE + [("x-a", "a\nb")],
    "b3 NUL in a value": BASE + [("x-a", "a\x00b")],
    "b3 colon in a name": BASE + [("x:a", "1")],
    "b3 space in a name": BASE + [("x a", "1")],
    "b3 CRLF in a name": BASE + [("x\r\na", "1")],
    "b3 empty name": BASE + [("", "1")],
    "b4 upper-case name": BASE + [("X-Upper", "1")],
    "b5 connection": BASE + [("connection", "close")],
    "b5 keep-alive": BASE + [("keep-alive", "timeout=5")],
    "b5 proxy-connection": BASE + [("proxy-connection", "keep-alive")],
    "b5 upgrade": BASE + [("upgrade", "websocket")],
    "b5 te gzip": BASE + [("te", "gzip")],
    "b6 duplicate :path": BASE + [(":path", "/again")],
    "b6 pseudo after regular": [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":authority", "a.test"), (":path", "/")],
    "b6 unknown pseudo": BASE + [(":evil", "1")],
    "b6 :status in a request": BASE + [(":status", "200")],
    "b6 no :method": BASE[1:],
    "b6 empty :path": [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "")],
    "b6 relative :path": [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "rel")],
    "b6 no :scheme": [(":method", "GET"), (":authority", "a.test"), (":path", "/")],
    "b6 :protocol without CONNECT": BASE + [(":protocol", "websocket")],
    "b7 space in :path": [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/a HTTP/1.1\r\nX: y")],
    "b7 CRLF in :path": [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/a\r\nX-Injected: 1")],
    "b7 space in :method": [(":method", "GET /x"), (":scheme", "http"), (":authority", "a.test"), (":path", "/")],
    "b7 CRLF in :authority": [(":method", "GET"), (":scheme", "http"), (":authority", "a.test\r\nX: y"), (":path", "/")],
    "b7 user info in :authority": [(":method", "GET"), (":scheme", "http"), (":authority", "u@a.test"), (":path", "/")],
    "b7 CRLF in :scheme": [(":method", "GET"), (":scheme", "http\r\nX: y"), (":authority", "a.test"), (":path", "/")],
    "b7 bad :scheme": [(":method", "GET"), (":scheme", "ht tp"), (":authority", "a.test"), (":path", "/")],
    "b8 host differs from :authority": BASE + [("host", "evil.test")],
    "b9 space before a value": BASE + [("x-a", " padded")],
    "b9 tab after a value": BASE + [("x-a", "padded\t")],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_b_malformed_requests_are_stream_errors_and_nothing_is_forwarded(proxy, name):
    port, origin = proxy
    raw = send_block(port, MALFORMED[name])
    try:
        assert refused(raw), (name, [type(f).__name__ for f in raw.frames])
    finally:
        raw.close()
    time.sleep(0.1)
    assert origin.raw == [], name


@pytest.mark.parametrize("declared,body", [("0", b"hello"), ("5", b"hello, world"), ("10", b"short")],
                         ids=["0 with a body", "5 with a longer body", "10 with a shorter body"])
def test_b1_content_length_that_disagrees_with_the_data_is_a_stream_error(proxy, declared, body):
    port, origin = proxy
    fields = [(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/cl"),
              ("content-length", declared)]
    raw = send_block(port, fields, body=body)
    try:
        assert refused(raw), [type(f).__name__ for f in raw.frames]
    finally:
        raw.close()
    time.sleep(0.3)
    assert origin.raw == []  # never a complete request (a truncated one is abandoned by its connection)


@pytest.mark.parametrize("declared,body,more", [("0", None, b"late"), ("5", b"hello", b"!")],
                         ids=["0, then DATA", "5 in full, then one byte more"])
def test_b1_bytes_past_a_length_that_was_complete_are_refused_and_nothing_complete_was_forwarded(proxy, declared, body, more):
    """The DATA that breaks the declared length comes half a second after a request that was
    complete as declared, with the stream still open: the upstream never had it whole (the head of
    a zero-length request waits for END_STREAM; the bytes that complete a length wait too)."""
    port, origin = proxy
    fields = [(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/late"),
              ("content-length", declared)]
    raw = send_block(port, fields, body=body if body is not None else b"", pause=0.5, more=more)
    try:
        assert refused(raw), [type(f).__name__ for f in raw.frames]
    finally:
        raw.close()
    time.sleep(0.3)
    assert origin.raw == []


def test_a_zero_length_request_whose_stream_ends_later_is_answered(proxy):
    port, origin = proxy
    fields = [(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/zero"),
              ("content-length", "0")]
    raw = send_block(port, fields, body=b"", pause=0.5, more=b"")
    try:
        last = raw.frames[-1]
        assert isinstance(last, HeadersFrame) and dict(hpack.Decoder().decode(last.data))[":status"] == "200"
    finally:
        raw.close()
    assert len(origin.raw) == 1 and origin.raw[0].startswith(b"POST /zero HTTP/1.1")


def test_b5_te_trailers_is_allowed_and_host_equal_to_authority_too(proxy):
    port, origin = proxy
    raw = send_block(port, BASE + [("te", "trailers"), ("host", "A.test"), ("x-kept", "yes")])
    try:
        last = raw.frames[-1]
        assert isinstance(last, HeadersFrame)
        assert dict(hpack.Decoder().decode(last.data))[":status"] == "200"
    finally:
        raw.close()
    deadline = time.time() + 3
    while not origin.raw and time.time() < deadline:
        time.sleep(0.05)
    head = origin.raw[0].decode("latin-1").lower()
    assert head.startswith("get /ok http/1.1\r\n")
    assert head.count("\r\nhost: ") == 1 and "\r\nhost: a.test\r\n" in head
    assert "x-kept: yes" in head and "\r\nte:" not in head  # te is hop-by-hop: never forwarded


def test_request_trailers_reach_an_http1_origin_as_chunked_trailers(proxy):
    port, origin = proxy
    raw = Raw(port)
    try:
        encoder = hpack.Encoder()
        head = HeadersFrame(1)
        head.data = encoder.encode([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/t"),
                                    ("te", "trailers")])
        head.flags.add("END_HEADERS")
        trailers = HeadersFrame(1)
        trailers.data = encoder.encode([("x-checksum", "abc123"), ("content-length", "99")])
        trailers.flags.add("END_HEADERS")
        trailers.flags.add("END_STREAM")
        raw.send(head, DataFrame(1, data=b"hello"), trailers)
        raw.read(lambda f: isinstance(f, DataFrame) and "END_STREAM" in f.flags)
    finally:
        raw.close()
    message = origin.raw[0].decode("latin-1")
    assert "transfer-encoding: chunked" in message.lower()
    assert message.endswith("5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n"), message  # content-length is no trailer
