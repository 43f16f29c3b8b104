"""HTTP/2 on the client side (h2c with prior knowledge), against the built binary: one port for
HTTP/1.1 and HTTP/2, requests forwarded to HTTP/1.1 origins, and CONNECT streams terminated here
(the CX-* ids are the CONNECT behaviours of our Envoy reference list). Real clients: curl, nghttp
and the python h2 package."""
import socket
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import ThreadedServer, free_port, recv_all
from origin import Origin, RecordingOrigin

# CONNECT is allowed to loopback targets only (anything else gets the default 403).
PLUGIN = """
local M = {}
function M.connect(req)
  if req.target.host == "127.0.0.1" then return moongate.tunnel() end
end
function M.route(req) return moongate.route("origin") end
return M
"""


def h2_config(port, origin_port, plugin_path, protocols="[http1, http2]"):
    return f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: {protocols}
clusters:
  - name: origin
    endpoints: ["127.0.0.1:{origin_port}"]
policy:
  watch: false
  plugins:
    - name: gate
      file: {plugin_path}
"""


class Target:
    """A TCP target on loopback: counts connections, runs `behaviour(conn)` on each."""

    def __init__(self, behaviour):
        self.accepted = 0
        self.eofs = 0
        self.behaviour = behaviour
        self.server = ThreadedServer(self._run)
        self.port = self.server.port

    def _run(self, server, conn):
        self.accepted += 1
        self.behaviour(self, conn)

    def close(self):
        self.server.close()


def echo_until_eof(target, conn):
    """Echoes; at EOF (the client's END_STREAM) says "bye" and then closes: true half-close."""
    conn.settimeout(10)
    while True:
        data = conn.recv(65536)
        if not data:
            target.eofs += 1
            conn.sendall(b"bye")
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


class H2Client:
    """A blocking h2 client over one TCP connection (prior knowledge)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.status = {}
        self.headers = {}
        self.data = {}
        self.ended = set()
        self.reset = set()
        self.goaway = False

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, headers, end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        self.data[sid] = b""
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    def connect(self, authority, end_stream=False):
        return self.request([(":method", "CONNECT"), (":authority", authority)], end_stream=end_stream)

    def get(self, path, authority="a.test"):
        return self.request([(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)])

    def send(self, sid, data, end_stream=False):
        self.conn.send_data(sid, data, end_stream=end_stream)
        self.flush()

    def pump(self, until, timeout=10):
        deadline = time.time() + timeout
        while not until():
            if time.time() > deadline:
                raise TimeoutError("h2 client waited too long")
            self.receive()

    def upload(self, sid, payload, sent, seconds, until=lambda: False, end=False):
        """Sends `payload[sent:]` on `sid` as far as the stream's window lets it, reading what the
        proxy sends (its credit, its answer) while the window is shut; stops after `seconds`, when
        `until()` holds or when all is sent (the last frame ends the stream with `end`). Returns
        how many bytes of `payload` are sent in all."""
        deadline = time.time() + seconds
        total = len(payload)
        while sent < total and time.time() < deadline and not until():
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, total - sent)
            if window > 0:
                self.send(sid, payload[sent:sent + window], end_stream=end and sent + window == total)
                sent += window
            else:
                self.receive()
        return sent

    def receive(self):
        """Reads once from the socket (nothing if it times out) and keeps what the events say."""
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        if not chunk:
            raise ConnectionError("the proxy closed the connection")
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived):
                fields = dict(event.headers)
                self.status[event.stream_id] = int(fields[":status"])
                self.headers[event.stream_id] = fields
            elif isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
            self.saw(event)
        self.flush()

    def saw(self, event):
        """Called for every event after the bookkeeping above (subclasses keep more)."""

    def close(self):
        self.sock.close()


@pytest.fixture
def h2proxy(moongate, tmp_path):
    """Moongate with HTTP/1.1 and HTTP/2 on one port, an origin cluster, and CONNECT allowed to
    loopback; returns (port, origin, an echo target)."""
    origin = Origin()
    target = Target(echo_until_eof)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    moongate(h2_config(port, origin.port, plugin), port)
    yield port, origin, target
    target.close()
    origin.close()


def test_h2c_prior_knowledge_and_http1_share_one_port(h2proxy):
    port, origin, _ = h2proxy
    h2 = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                         f"http://127.0.0.1:{port}/x"], capture_output=True, text=True, timeout=20)
    assert h2.stdout == "2 200"
    h1 = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", f"http://127.0.0.1:{port}/y"],
                        capture_output=True, text=True, timeout=20)
    assert h1.stdout == "1.1 200"
    assert len(origin.requests) == 2


def test_nghttp_many_requests_on_one_connection(h2proxy):
    port, origin, _ = h2proxy
    urls = [f"http://127.0.0.1:{port}/n{i}" for i in range(10)]
    run = subprocess.run(["nghttp", "-n", "-s", *urls], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("200") >= 10  # one statistics line per request, each with status 200
    assert len(origin.requests) == 10


def test_h2_request_bodies_reach_the_origin_with_and_without_a_length(h2proxy):
    port, origin, _ = h2proxy
    client = H2Client(port)
    try:
        with_length = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/a"),
                                      ("content-length", "5")], end_stream=False)
        client.send(with_length, b"hello", end_stream=True)
        chunked = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/b")],
                                 end_stream=False)
        client.send(chunked, b"abc")
        client.send(chunked, b"defg", end_stream=True)
        client.pump(lambda: {with_length, chunked} <= client.ended)
        assert client.status[with_length] == 200 and client.status[chunked] == 200
    finally:
        client.close()
    bodies = sorted(request[3] for request in origin.requests)
    assert bodies == [b"abcdefg", b"hello"]


def test_many_concurrent_requests_on_one_connection_are_all_answered(h2proxy):
    port, origin, _ = h2proxy
    client = H2Client(port)
    try:
        streams = [client.get(f"/c{i}") for i in range(20)]
        client.pump(lambda: all(sid in client.ended for sid in streams), timeout=30)
        assert all(client.status[sid] == 200 for sid in streams)
        assert sorted(request[1] for request in origin.requests) == sorted(f"/c{i}" for i in range(20))
    finally:
        client.close()


def test_cx_h2_1_and_2_many_connect_streams_each_with_its_own_upstream(h2proxy):
    port, _, target = h2proxy
    client = H2Client(port)
    try:
        streams = [client.connect(f"127.0.0.1:{target.port}") for _ in range(10)]
        client.pump(lambda: all(sid in client.status for sid in streams))
        for sid in streams:
            assert client.status[sid] == 200
            assert "content-length" not in client.headers[sid]  # CX-H2-1: no content-length, stream open
            assert sid not in client.ended
        for sid in streams:
            client.send(sid, f"payload of stream {sid}".encode())
        client.pump(lambda: all(client.data[sid] == f"payload of stream {sid}".encode() for sid in streams))
        assert target.accepted == 10  # CX-H2-2: one upstream connection per stream
    finally:
        client.close()


def test_cx_h2_3_and_cx_hc_4_a_reset_touches_only_its_stream(h2proxy):
    port, _, target = h2proxy
    client = H2Client(port)
    try:
        first, second, third = (client.connect(f"127.0.0.1:{target.port}") for _ in range(3))
        client.pump(lambda: {first, second, third} <= set(client.status))
        client.conn.reset_stream(second)
        client.flush()
        # The reset stream's upstream connection is closed (the target sees EOF and answers "bye" into nothing).
        deadline = time.time() + 5
        while target.eofs < 1 and time.time() < deadline:
            time.sleep(0.02)
        assert target.eofs == 1
        client.send(first, b"one")
        client.send(third, b"three")
        client.pump(lambda: client.data[first] == b"one" and client.data[third] == b"three")
        after = client.get("/after-reset")
        client.pump(lambda: after in client.ended)
        assert client.status[after] == 200
    finally:
        client.close()


def test_cx_h2_4_extended_connect_for_bytestream_is_a_classic_tunnel(h2proxy):
    port, _, target = h2proxy
    client = H2Client(port)
    try:
        client.pump(lambda: client.conn.remote_settings.enable_connect_protocol == 1)  # RFC 8441 advertised
        sid = client.request([(":method", "CONNECT"), (":protocol", "bytestream"), (":scheme", "http"), (":path", "/"),
                              (":authority", f"127.0.0.1:{target.port}")], end_stream=False)
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200
        client.send(sid, b"over bytestream", end_stream=True)
        client.pump(lambda: sid in client.ended)
        assert client.data[sid] == b"over bytestreambye"
        assert target.accepted == 1
    finally:
        client.close()


def test_cx_hc_1_and_2_end_stream_is_a_fin_and_the_way_back_stays_open(h2proxy):
    port, _, target = h2proxy
    client = H2Client(port)
    try:
        sid = client.connect(f"127.0.0.1:{target.port}")
        client.pump(lambda: sid in client.status)
        client.send(sid, b"last words", end_stream=True)
        # The target gets every byte, then a FIN; it answers after the FIN, and that answer arrives.
        client.pump(lambda: sid in client.ended)
        assert client.data[sid] == b"last wordsbye"
        assert target.eofs == 1
        assert sid not in client.reset
    finally:
        client.close()


def test_cx_hc_3_a_target_fin_delivers_every_byte_then_end_stream(h2proxy, servers):
    port, _, _ = h2proxy
    big = bytes(range(256)) * 4096  # 1 MiB, far more than one flow-control window

    def send_and_close(server, conn):
        conn.sendall(big)
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn, timeout=5)

    sender = servers(send_and_close)
    client = H2Client(port)
    try:
        sid = client.connect(f"127.0.0.1:{sender.port}")
        client.pump(lambda: sid in client.ended, timeout=20)
        assert client.status[sid] == 200
        assert client.data[sid] == big  # nothing truncated (Envoy's issues 28329, 12996)
        assert sid not in client.reset
    finally:
        client.close()


def test_cx_h2_5_a_header_only_connect_half_closes_the_upstream(h2proxy):
    port, _, target = h2proxy
    client = H2Client(port)
    try:
        sid = client.connect(f"127.0.0.1:{target.port}", end_stream=True)
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 200
        assert client.data[sid] == b"bye"  # the target saw EOF at once and its answer came through
        assert target.eofs == 1
    finally:
        client.close()


@pytest.mark.parametrize("headers", [
    [(":method", "CONNECT"), (":authority", "127.0.0.1:{port}"), (":scheme", "http"), (":path", "/")],
    [(":method", "CONNECT"), (":scheme", "http"), (":path", "/")],
], ids=["scheme and path without protocol", "no authority"])
def test_cx_bad_6_a_malformed_connect_is_a_stream_error_never_a_tunnel(h2proxy, headers):
    port, _, target = h2proxy
    client = H2Client(port)
    try:
        client.conn.config.validate_outbound_headers = False
        client.conn.config.normalize_outbound_headers = False
        fields = [(name, value.replace("{port}", str(target.port))) for name, value in headers]
        sid = client.request(fields, end_stream=False)
        client.pump(lambda: sid in client.reset or client.goaway or sid in client.status)
        assert sid not in client.status or client.status[sid] >= 400
        assert target.accepted == 0
    finally:
        client.close()


def test_cx_fail_4_an_unreachable_target_fails_its_stream_only(h2proxy):
    port, _, target = h2proxy
    closed_port = free_port()
    client = H2Client(port)
    try:
        dead = client.connect(f"127.0.0.1:{closed_port}")
        live = client.connect(f"127.0.0.1:{target.port}")
        client.pump(lambda: {dead, live} <= set(client.status))
        assert client.status[dead] == 503
        assert client.status[live] == 200
        client.send(live, b"still here")
        client.pump(lambda: client.data[live] == b"still here")
    finally:
        client.close()


def test_connect_not_enabled_is_a_403_over_h2(h2proxy):
    port, _, _ = h2proxy
    client = H2Client(port)
    try:
        sid = client.connect("example.org:443")
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 403
    finally:
        client.close()


def test_an_upstream_that_never_answers_an_h2_request_is_a_504_after_upstream_response(moongate, tmp_path):
    """timeouts.upstream_response holds on HTTP/2 streams as on HTTP/1.1 (the soak found h2 streams
    waiting for good); the origin's connection is closed and the connection's other streams go on."""
    silent = Target(lambda target, conn: conn.recv(65536) and time.sleep(8))
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    text = h2_config(port, silent.port, plugin) + "timeouts:\n  upstream_response: 1s\n"
    moongate(text, port)
    client = H2Client(port)
    started = time.time()
    sid = client.get("/stall")
    client.pump(lambda: sid in client.ended or sid in client.reset, timeout=6)
    assert client.status.get(sid) == 504, (client.status, client.reset)
    assert 0.8 < time.time() - started < 4.0
    assert b"upstream response timed out" in client.data[sid]
    client.close()
    silent.close()


def test_c12_the_tunnel_cap_per_client_holds_for_connect_streams(moongate, tmp_path):
    """A CONNECT stream counts against limits.max_tunnels_per_client from before its 200 goes out:
    the next CONNECT, sent as soon as that 200 is read, is refused with 503 and never dialled;
    closing the first stream frees its place."""
    target = Target(echo_until_eof)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    text = h2_config(port, target.port, plugin) + "limits:\n  max_tunnels_per_client: 1\n"
    moongate(text, port)
    client = H2Client(port)
    first = client.connect(f"127.0.0.1:{target.port}")
    client.pump(lambda: first in client.status)
    assert client.status[first] == 200
    second = client.connect(f"127.0.0.1:{target.port}")
    client.pump(lambda: second in client.status or second in client.reset)
    assert client.status.get(second) == 503, (client.status, client.reset)
    time.sleep(0.3)
    assert target.accepted == 1
    client.conn.reset_stream(first)
    client.flush()
    deadline = time.time() + 5
    while True:
        third = client.connect(f"127.0.0.1:{target.port}")
        client.pump(lambda: third in client.status or third in client.reset)
        if client.status.get(third) == 200 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert client.status.get(third) == 200
    client.close()
    target.close()


def test_an_http1_origins_hop_by_hop_fields_never_reach_an_h2_client(moongate, tmp_path):
    """An HTTP/1.1 response's connection-specific fields are not HTTP/2's (RFC 9113 §8.2.2): the
    hop-by-hop set and whatever its Connection header names are dropped, every other field arrives
    with its name lower-cased, on the path where no script reads the response."""
    def respond(method, path, headers, body, conn):
        return (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Secret\r\n"
                b"Keep-Alive: timeout=5\r\nX-Secret: 1\r\nProxy-Authenticate: Basic\r\nUpgrade: foo\r\n"
                b"X-Kept: Yes\r\nSet-Cookie: a=1\r\n\r\nok")
    origin = RecordingOrigin(respond)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    moongate(h2_config(port, origin.port, plugin), port)
    client = H2Client(port)
    try:
        sid = client.get("/hop")
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 200 and client.data[sid] == b"ok"
        names = set(client.headers[sid])
        assert {"x-kept", "set-cookie", "content-length"} <= names
        assert client.headers[sid]["x-kept"] == "Yes"
        assert not names & {"connection", "keep-alive", "x-secret", "proxy-authenticate", "upgrade", "transfer-encoding"}
    finally:
        client.close()
        origin.close()


def test_an_upload_into_a_tunnel_whose_target_does_not_read_stops_at_the_window(h2proxy, servers):
    """Back-pressure from the TCP side to the HTTP/2 flow-control window: while the target reads
    nothing, Moongate stops giving the stream credit, so the client stops within a bounded amount
    (the stream window plus socket buffers), far short of what it wants to send; once the target
    reads, every byte arrives, in order, and the stream goes on."""
    port, _, _ = h2proxy
    total = 48 << 20
    pattern = bytes(range(256)) * 256  # 64 KiB
    payload = memoryview(pattern * (total // len(pattern)))
    received = {"bytes": 0, "intact": True}
    reading = threading.Event()

    def slow_reader(server, conn):
        reading.wait(20)
        conn.settimeout(10)
        offset = 0
        while offset < total:
            data = conn.recv(1 << 20)
            if not data:
                break
            received["intact"] = received["intact"] and data == payload[offset:offset + len(data)]
            offset += len(data)
            received["bytes"] = offset
        conn.sendall(b"done")

    target = servers(slow_reader)
    client = H2Client(port)
    try:
        sid = client.connect(f"127.0.0.1:{target.port}")
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200
        client.sock.settimeout(0.05)
        # As real clients do: no Nagle delay between small frames and the proxy's delayed ACKs.
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = client.upload(sid, payload, 0, 3)
        stalled_at = sent
        # Stream window (1 MiB by default) plus what the kernel buffers on loopback: not 48 MiB.
        assert stalled_at < 24 << 20, stalled_at
        reading.set()
        sent = client.upload(sid, payload, sent, 30)
        assert sent == total
        client.send(sid, b"", end_stream=True)
        client.sock.settimeout(5)
        client.pump(lambda: b"done" in client.data[sid], timeout=30)
        assert received["bytes"] == total and received["intact"]
    finally:
        client.close()


def test_data_in_flight_on_reset_streams_does_not_use_up_the_connection_window(h2proxy):
    """DATA a client had on the wire when its stream was reset still counts against the connection's
    window (RFC 9113 §6.9): the proxy must give that credit back too, or after enough resets every
    upload on the connection stalls. Thirty uploads that overrun their content-length (each reset
    at its first frame, three more frames in flight: about 1.4 MiB against a 1 MiB window), then a
    2 MiB upload on the same connection completes."""
    port, _, _ = h2proxy
    client = H2Client(port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = b"x" * 16384
    try:
        for _ in range(30):
            sid = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/over"),
                                  ("content-length", "10")], end_stream=False)
            for _ in range(4):
                if client.conn.local_flow_control_window(sid) < len(frame):
                    break
                client.conn.send_data(sid, frame)
            client.flush()
            client.pump(lambda: sid in client.reset)
        body = b"y" * (2 << 20)
        sid = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/big"),
                              ("content-length", str(len(body)))], end_stream=False)
        sent = 0
        deadline = time.time() + 30
        while sent < len(body) and time.time() < deadline:
            window = min(client.conn.local_flow_control_window(sid), client.conn.max_outbound_frame_size, len(body) - sent)
            if window > 0:
                client.send(sid, body[sent:sent + window], end_stream=sent + window == len(body))
                sent += window
                continue
            client.pump(lambda: client.conn.local_flow_control_window(sid) > 0 or sid in client.reset, timeout=10)
        assert sent == len(body)
        client.pump(lambda: sid in client.ended, timeout=20)
        assert client.status[sid] == 200
    finally:
        client.close()
