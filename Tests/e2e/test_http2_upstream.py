"""HTTP/2 upstreams (`protocol: http2` on a cluster, prior knowledge): requests from HTTP/2 clients
become streams multiplexed over one connection per endpoint, the peer's
SETTINGS_MAX_CONCURRENT_STREAMS is respected (another connection when one is full), a GOAWAY sends
later requests to a new connection, and a request the upstream refused without processing it
(REFUSED_STREAM, or a stream above GOAWAY's last stream id) is sent again. The origin is a python h2
server written here; the client is python h2."""
import select
import socket
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from conftest import free_port, run_moongate
from test_http2_limits import Client


class H2Origin:
    """An h2c server: answers each request with `origin <path>` after `delay` seconds, and can
    limit concurrent streams, refuse the first streams, or go away after some answers."""

    def __init__(self, max_streams=100, delay=0.0, refuse_first=0, goaway_after=None, goaway_at_first=False, early=False):
        self.max_streams = max_streams
        self.early = early  # answer on the request's HEADERS, before its body ends
        self.resets = 0  # streams the proxy reset
        self.delay = delay
        self.refuse_left = refuse_first
        self.goaway_after = goaway_after
        self.goaway_at_first = goaway_at_first
        self.connections = 0
        self.requests = []  # (connection index, path, headers, body)
        self.refused = 0
        self.max_open = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                index = self.connections
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, sock, index):
        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        h2conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1})
        h2conn.initiate_connection()
        sock.sendall(h2conn.data_to_send())
        heads, bodies, due = {}, {}, []
        answered, went_away = 0, False
        try:
            while True:
                timeout = max(0.0, min(t for t, _ in due) - time.time()) if due else 0.5
                readable, _, _ = select.select([sock], [], [], timeout)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    for event in h2conn.receive_data(data):
                        if isinstance(event, h2.events.RequestReceived):
                            heads[event.stream_id] = dict(event.headers)
                            bodies[event.stream_id] = b""
                            if heads[event.stream_id][":method"] == "CONNECT":  # a parent proxy: 200, then echo
                                with self.lock:
                                    self.requests.append((index, None, heads[event.stream_id], b""))
                                h2conn.send_headers(event.stream_id, [(":status", "200")])
                            elif self.early and not event.stream_ended:
                                due.append((time.time(), event.stream_id))
                        elif isinstance(event, h2.events.StreamReset):
                            with self.lock:
                                self.resets += 1
                        elif isinstance(event, h2.events.DataReceived):
                            bodies[event.stream_id] += event.data
                            h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                            if heads[event.stream_id].get(":protocol") == "websocket" and event.data:
                                answer = websocket_echo(event.data)
                                # A close frame is answered and the stream ends (the TCP close of RFC 6455).
                                h2conn.send_data(event.stream_id, answer, end_stream=answer[0] == 0x88)
                            elif heads[event.stream_id][":method"] == "CONNECT" and event.data:
                                h2conn.send_data(event.stream_id, b"parent: " + event.data)
                        elif isinstance(event, h2.events.StreamEnded):
                            sid = event.stream_id
                            if self.early:
                                continue
                            if heads[sid].get(":protocol") == "websocket":
                                continue
                            if heads[sid][":method"] == "CONNECT":
                                h2conn.send_data(sid, b" bye", end_stream=True)
                                continue
                            if self.refuse_left > 0:
                                with self.lock:
                                    self.refuse_left -= 1
                                    self.refused += 1
                                h2conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
                                continue
                            if self.goaway_at_first and index == 1:  # only the first connection goes away
                                if went_away:
                                    continue  # above the last stream id: not processed
                                # Answer this one at once, then go away naming it as the last.
                                went_away = True
                                due.append((0, sid))
                                continue
                            due.append((time.time() + self.delay, sid))
                            with self.lock:
                                self.max_open = max(self.max_open, len(due))
                now = time.time()
                for when, sid in sorted(due):
                    if when > now:
                        continue
                    due.remove((when, sid))
                    head = heads[sid]
                    with self.lock:
                        self.requests.append((index, head[":path"], head, bodies[sid]))
                    body = f"origin {head[':path']}".encode()
                    h2conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body))),
                                              ("x-connection", str(index))])
                    h2conn.send_data(sid, body, end_stream=True)
                    answered += 1
                    if (self.goaway_at_first and index == 1) or (self.goaway_after and answered >= self.goaway_after and not went_away):
                        went_away = True
                        h2conn.close_connection(last_stream_id=sid)
                        sock.sendall(h2conn.data_to_send())
                        time.sleep(0.3)
                        return
                out = h2conn.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()

    def close(self):
        self.closed = True
        self.sock.close()


def websocket_echo(data):
    """Reads one masked client text frame (short) and returns the server's unmasked answer frame."""
    if data[0] & 0x0F == 0x8:  # close: answer with a close frame
        return bytes([0x88, 0])
    length = data[1] & 0x7F
    mask = data[2:6]
    text = bytes(b ^ mask[i % 4] for i, b in enumerate(data[6:6 + length]))
    answer = b"echo: " + text
    return bytes([0x81, len(answer)]) + answer


ROUTE_ALL = """
local M = {}
function M.route(req) return moongate.route("up") end
return M
"""


def start(moongate, tmp_path, origin):
    plugin = tmp_path / "route.lua"
    plugin.write_text(ROUTE_ALL)
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
clusters:
  - name: up
    endpoints: ["127.0.0.1:{origin.port}"]
    protocol: http2
policy:
  watch: false
  plugins:
    - name: route
      file: {plugin}
""", port)
    return port


def get_all(client, paths, timeout=20):
    streams = {client.get(path): path for path in paths}
    client.pump(lambda: all(sid in client.ended or sid in client.reset for sid in streams), timeout=timeout)
    return streams


@pytest.fixture
def origins():
    made = []

    def make(**kw):
        origin = H2Origin(**kw)
        made.append(origin)
        return origin

    yield make
    for origin in made:
        origin.close()


def test_an_http2_cluster_multiplexes_requests_over_one_connection(moongate, tmp_path, origins):
    origin = origins(delay=0.2)
    port = start(moongate, tmp_path, origin)
    client = Client(port)
    try:
        streams = get_all(client, [f"/m{i}" for i in range(20)])
        for sid, path in streams.items():
            assert client.status[sid] == 200 and client.data[sid] == f"origin {path}".encode()
        post = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/post"),
                               ("content-length", "5")], end_stream=False)
        client.send(post, b"hello", end_stream=True)
        client.pump(lambda: post in client.ended)
        assert client.status[post] == 200
    finally:
        client.close()
    assert origin.connections == 1
    assert origin.max_open > 1  # the requests were in flight together on that connection
    body = [r for r in origin.requests if r[1] == "/post"][0]
    assert body[3] == b"hello" and body[2][":authority"] == "a.test" and body[2][":method"] == "POST"


def test_the_peers_max_concurrent_streams_is_respected(moongate, tmp_path, origins):
    origin = origins(max_streams=5, delay=0.5)
    port = start(moongate, tmp_path, origin)
    client = Client(port)
    try:
        streams = get_all(client, [f"/c{i}" for i in range(12)])
        assert all(client.status.get(sid) == 200 for sid in streams), (client.status, client.reset)
    finally:
        client.close()
    assert origin.max_open <= 5
    assert origin.connections >= 3  # 12 requests at once, 5 per connection


def test_after_goaway_later_requests_go_to_a_new_connection(moongate, tmp_path, origins):
    origin = origins(goaway_after=3)
    port = start(moongate, tmp_path, origin)
    client = Client(port)
    try:
        for i in range(8):
            sid = client.get(f"/g{i}")
            client.pump(lambda: sid in client.ended or sid in client.reset)
            assert client.status.get(sid) == 200, (i, client.reset)
    finally:
        client.close()
    assert origin.connections >= 3


def test_a_refused_stream_is_sent_again(moongate, tmp_path, origins):
    origin = origins(refuse_first=2)
    port = start(moongate, tmp_path, origin)
    client = Client(port)
    try:
        sid = client.get("/retry")
        client.pump(lambda: sid in client.ended or sid in client.reset)
        assert client.status.get(sid) == 200 and client.data[sid] == b"origin /retry"
    finally:
        client.close()
    assert origin.refused == 2 and [r[1] for r in origin.requests] == ["/retry"]


def test_streams_above_goaways_last_stream_id_are_sent_again(moongate, tmp_path, origins):
    origin = origins(goaway_at_first=True, delay=0.3)
    port = start(moongate, tmp_path, origin)
    client = Client(port)
    try:
        streams = get_all(client, [f"/a{i}" for i in range(4)])
        assert all(client.status.get(sid) == 200 for sid in streams), (client.status, client.reset)
    finally:
        client.close()
    assert sorted(r[1] for r in origin.requests) == [f"/a{i}" for i in range(4)]
    assert origin.connections >= 2


def test_an_unknown_cluster_protocol_is_an_error_with_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n  - port: 1\nclusters:\n  - name: up\n    endpoints: [\"127.0.0.1:1\"]\n    protocol: http3\n")
    run = run_moongate("validate", "--config", str(path))
    assert run.returncode != 0
    assert f"{path}:6" in run.stdout + run.stderr and "unknown protocol 'http3'" in run.stdout + run.stderr


def test_reverse_proxy_http2_upstream_config(moongate, tmp_path, origins):
    """configs/reverse_proxy_http2_upstream.yaml as shipped (ports moved): HTTP/2 clients, an HTTP/2 cluster."""
    from test_configs import adapt

    origin = origins(delay=0.1)
    port = free_port()
    moongate(adapt("reverse_proxy_http2_upstream.yaml", tmp_path, {8443: port, 50051: origin.port, 9904: free_port()}), port)
    client = Client(port)
    try:
        streams = get_all(client, [f"/svc.Echo/Call{i}" for i in range(10)])
        for sid, path in streams.items():
            assert client.status[sid] == 200 and client.data[sid] == f"origin {path}".encode()
    finally:
        client.close()
    assert origin.connections == 1


def test_an_http1_clients_request_refused_by_the_http2_cluster_is_sent_again(moongate, tmp_path, origins):
    """The same retry for HTTP/1.1 clients (their requests are streams of the cluster's connection
    too): REFUSED_STREAM twice, then answered, and the client sees only the answer."""
    origin = origins(refuse_first=2)
    port = start(moongate, tmp_path, origin)
    run = subprocess.run(["curl", "-sS", "-H", "Host: svc.test", f"http://127.0.0.1:{port}/retry-h1"],
                         capture_output=True, text=True, timeout=20)
    assert run.stdout == "origin /retry-h1", run.stdout + run.stderr
    assert origin.refused == 2 and [r[1] for r in origin.requests] == ["/retry-h1"]


def test_an_http1_clients_request_with_a_body_is_not_sent_again(moongate, tmp_path, origins):
    """A body may have been partly consumed: a refused request with one is a 502, not a retry."""
    origin = origins(refuse_first=1)
    port = start(moongate, tmp_path, origin)
    run = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: svc.test", "-d", "x=1",
                          f"http://127.0.0.1:{port}/post"], capture_output=True, text=True, timeout=20)
    assert run.stdout == "502" and origin.refused == 1 and origin.requests == []
