"""Trailers and informational responses across the HTTP/1.1 ↔ HTTP/2 boundary: a chunked
response's trailer fields from an HTTP/1.1 origin reach an HTTP/2 client as a trailing HEADERS
block (gRPC's `grpc-status` needs them) and an HTTP/1.1 client in the last chunk; fields that may
not be trailers are dropped. A 103 Early Hints or 100 Continue from the origin reaches an HTTP/2
client as its own HEADERS frame before the final response."""
import socket
import threading
import time

import h2.events

from conftest import free_port, recv_all
from helpers import config, router
from origin import RecordingOrigin
from test_http2 import H2Client


def start(moongate, origin):
    port = free_port()
    text = config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{origin.port}"})
    text = text.replace(f"    port: {port}\n", f"    port: {port}\n    protocols: [http1, http2]\n", 1)
    moongate(text, port)
    return port


def grpc_like(method, path, headers, body, conn):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: grpc-status, grpc-message\r\n\r\n"
            b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: all good\r\nContent-Length: 99\r\n"
            b"Connection: close\r\n\r\n")


class RecordingClient(H2Client):
    """Keeps the informational heads and trailers of each stream too."""

    def __init__(self, port):
        super().__init__(port)
        self.informational = {}
        self.trailers = {}

    def saw(self, event):
        if isinstance(event, h2.events.InformationalResponseReceived):
            self.informational.setdefault(event.stream_id, []).append(
                [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                 for k, v in event.headers])
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers[event.stream_id] = [
                (k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v) for k, v in event.headers]


def test_response_trailers_from_an_http1_origin_reach_an_http2_client(moongate):
    origin = RecordingOrigin(grpc_like)
    try:
        port = start(moongate, origin)
        client = RecordingClient(port)
        sid = client.get("/svc.Greeter/Hello")
        client.pump(lambda: sid in client.ended or sid in client.reset)
        assert client.status[sid] == 200 and client.data[sid] == b"hello"
        assert client.trailers[sid] == [("grpc-status", "0"), ("grpc-message", "all good")]
        # The connection goes on serving after a stream that ended with trailers.
        again = client.get("/again")
        client.pump(lambda: again in client.ended)
        assert client.status[again] == 200 and again not in client.reset
        client.close()
    finally:
        origin.close()


def test_response_trailers_reach_an_http1_client_in_the_last_chunk(moongate):
    origin = RecordingOrigin(grpc_like)
    try:
        port = start(moongate, origin)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        data = recv_all(s, timeout=5)
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        body = data.partition(b"\r\n\r\n")[2]
        assert body == b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: all good\r\n\r\n", body
    finally:
        origin.close()


def early_hints(method, path, headers, body, conn):
    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
                 b"Link: </app.js>; rel=preload; as=script\r\nConnection: X-Hint-Secret\r\nX-Hint-Secret: 1\r\n\r\n")
    time.sleep(0.2)
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_103_early_hints_reach_an_http2_client_before_the_response(moongate):
    origin = RecordingOrigin(early_hints)
    try:
        port = start(moongate, origin)
        client = RecordingClient(port)
        sid = client.get("/page")
        client.pump(lambda: sid in client.ended or sid in client.reset)
        hints = client.informational[sid]
        assert len(hints) == 1
        assert hints[0] == [(":status", "103"), ("link", "</style.css>; rel=preload; as=style"),
                            ("link", "</app.js>; rel=preload; as=script")], hints
        assert client.status[sid] == 200 and client.data[sid] == b"ok"
        client.close()
    finally:
        origin.close()


def test_100_continue_from_the_origin_reaches_an_http2_client(moongate):
    """The origin sends 100 Continue to an `expect: 100-continue` request before reading its body;
    the HTTP/2 client sees the 100 before it sends the body, then the final answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    origin_port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"expect: 100-continue" in head.lower()
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
        while len(rest) < length:
            rest += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(rest), rest))
        time.sleep(0.5)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()

    class Origin:
        port = origin_port

        def close(self):
            listener.close()

    origin = Origin()
    try:
        port = start(moongate, origin)
        client = RecordingClient(port)
        sid = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/up"),
                              ("expect", "100-continue"), ("content-length", "5")], end_stream=False)
        client.pump(lambda: sid in client.informational)
        assert client.informational[sid][0][0] == (":status", "100")
        client.send(sid, b"12345", end_stream=True)
        client.pump(lambda: sid in client.ended or sid in client.reset)
        assert client.status[sid] == 200 and client.data[sid] == b"12345"
        client.close()
    finally:
        origin.close()
