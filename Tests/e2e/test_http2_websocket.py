"""WebSocket over HTTP/2 (RFC 8441) toward an HTTP/1.1 origin (CX-XLATE-5, CX-EXT-1..4): the
client is python h2 doing extended CONNECT with `:protocol websocket` (and, as RFC 8441 clients
do, no Sec-WebSocket-Key); the origin is the `websockets` library, which checks the handshake
strictly. WebSocket frames are made and read with `websockets`' own frame codec."""
import socket
import threading
import time

import h2.settings
import pytest
from websockets.frames import Frame, Opcode
from websockets.sync.server import serve as ws_serve

from conftest import PLUGINS, free_port, recv_head
from test_http2_limits import Client


def ws_config(port, origin_port, upgrades='["websocket"]'):
    return f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
clusters:
  - name: ws
    endpoints: ["127.0.0.1:{origin_port}"]
policy:
  watch: false
  plugins_dir: {PLUGINS}
  plugins:
    - name: host_router
      config:
        upgrades: {upgrades}
        routes:
          - {{ host: "*", prefix: "/", cluster: ws }}
"""


@pytest.fixture
def ws_origin():
    seen = []

    def echo(ws):
        seen.append(dict(ws.request.headers))
        for message in ws:
            ws.send("echo: " + message)

    server = ws_serve(echo, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.socket.getsockname()[1], seen
    server.shutdown()


def wait_for(condition, timeout=5):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.02)
    assert condition()


def client_frame(text):
    """A masked text frame, as a client sends it."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=True)


def parse_texts(data):
    texts = []
    while len(data) >= 2:
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            length = int.from_bytes(data[2:4], "big")
            offset = 4
        if len(data) < offset + length:
            break
        texts.append(data[offset:offset + length].decode())
        data = data[offset + length:]
    return texts


def open_websocket(client, port, path="/chat", extra=()):
    # RFC 8441 §3: a client uses :protocol only once the server's SETTINGS allowed it.
    client.pump(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
    return client.request([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":path", path),
                           (":authority", f"127.0.0.1:{port}"), ("sec-websocket-version", "13"), *extra],
                          end_stream=False)


def test_cx_ext_1_2_and_xlate_5_websocket_over_h2_to_an_http1_origin(moongate, ws_origin):
    origin_port, seen = ws_origin
    port = free_port()
    moongate(ws_config(port, origin_port), port)
    client = Client(port)
    try:
        client.settle()
        assert client.conn.remote_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1  # CX-EXT-1
        sid = open_websocket(client, port)
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200  # CX-XLATE-5: the origin's 101 became a 200
        assert "sec-websocket-accept" not in client.headers[sid]
        assert sid not in client.ended
        # The origin got a real handshake: GET with Upgrade, Connection, a key made by the proxy, version 13.
        wait_for(lambda: seen)
        handshake = {k.lower(): v for k, v in seen[0].items()}
        assert handshake["upgrade"].lower() == "websocket" and "upgrade" in handshake["connection"].lower()
        assert len(handshake["sec-websocket-key"]) == 24 and handshake["sec-websocket-version"] == "13"
        client.send(sid, client_frame("hello"))
        client.pump(lambda: parse_texts(client.data[sid]) == ["echo: hello"])
        client.send(sid, client_frame("again"))
        client.pump(lambda: parse_texts(client.data[sid]) == ["echo: hello", "echo: again"])
    finally:
        client.close()


def test_cx_xlate_5_the_clients_own_key_is_kept(moongate, ws_origin):
    origin_port, seen = ws_origin
    port = free_port()
    moongate(ws_config(port, origin_port), port)
    client = Client(port)
    try:
        sid = open_websocket(client, port, extra=[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")])
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200
        wait_for(lambda: seen)
        assert {k.lower(): v for k, v in seen[0].items()}["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    finally:
        client.close()


def test_cx_ext_3_and_4_the_translated_request_is_a_get_with_the_path_and_end_stream_a_fin(moongate, servers):
    heads = []

    def origin(server, conn):
        head, _ = recv_head(conn)
        heads.append(head)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: x\r\n\r\nfirst")
        data = conn.recv(100)
        conn.sendall(b"got " + data)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.5)

    upstream = servers(origin)
    port = free_port()
    moongate(ws_config(port, upstream.port), port)
    client = Client(port)
    try:
        sid = open_websocket(client, port, path="/room/7?x=1")
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200
        client.pump(lambda: client.data[sid] == b"first")  # bytes the origin sent right after its 101
        client.send(sid, b"ping", end_stream=True)  # CX-EXT-4: END_STREAM is a FIN toward the origin
        client.pump(lambda: sid in client.ended)
        assert client.data[sid] == b"firstgot ping"
        lines = heads[0].split("\r\n")
        assert lines[0] == "GET /room/7?x=1 HTTP/1.1"
        assert f"host: 127.0.0.1:{port}" in [line.lower() for line in lines]
    finally:
        client.close()


def test_cx_ws_2_a_refused_upgrade_is_an_ordinary_response(moongate, servers):
    def origin(server, conn):
        recv_head(conn)
        conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
        time.sleep(0.5)

    upstream = servers(origin)
    port = free_port()
    moongate(ws_config(port, upstream.port), port)
    client = Client(port)
    try:
        sid = open_websocket(client, port)
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 426 and client.data[sid] == b"nope"
        after = client.get("/x")  # the connection goes on
        client.pump(lambda: after in client.status)
    finally:
        client.close()


def test_cx_dis_3_an_upgrade_policy_does_not_enable_is_refused_over_h2(moongate, ws_origin):
    origin_port, seen = ws_origin
    port = free_port()
    moongate(ws_config(port, origin_port, upgrades="[]"), port)
    client = Client(port)
    try:
        sid = open_websocket(client, port)
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 403
        assert seen == []
    finally:
        client.close()


def test_an_extended_connect_for_another_protocol_becomes_that_upgrade_toward_an_http1_origin(moongate, servers):
    """`:protocol irc` (enabled by policy) reaches the HTTP/1.1 origin as `Upgrade: irc`, with no
    WebSocket fields; its 101 becomes the stream's 200 and bytes flow both ways."""
    heads = []

    def origin(server, conn):
        head, _ = recv_head(conn)
        heads.append(head)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: irc\r\nConnection: Upgrade\r\n\r\n")
        data = conn.recv(100)
        conn.sendall(b"irc: " + data)
        time.sleep(0.5)

    upstream = servers(origin)
    port = free_port()
    moongate(ws_config(port, upstream.port, upgrades='["irc"]'), port)
    client = Client(port)
    try:
        client.pump(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
        sid = client.request([(":method", "CONNECT"), (":protocol", "irc"), (":scheme", "http"), (":path", "/chat"),
                              (":authority", f"127.0.0.1:{port}")], end_stream=False)
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200
        client.send(sid, b"NICK moon")
        client.pump(lambda: client.data[sid] == b"irc: NICK moon")
        lines = [line.lower() for line in heads[0].split("\r\n")]
        assert lines[0] == "get /chat http/1.1" and "upgrade: irc" in lines and "connection: upgrade" in lines
        assert not any(line.startswith("sec-websocket-") for line in lines)
    finally:
        client.close()


def test_decide_shows_the_upgrade_an_extended_connect_becomes(tmp_path):
    import subprocess
    from conftest import BIN
    path = tmp_path / "c.yaml"
    path.write_text(ws_config(free_port(), 9, upgrades='["irc"]'))
    out = subprocess.run([BIN, "decide", "--config", str(path), "--request", "h2 CONNECT chat.test:443/room irc"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "upgrade sent to cluster ws" in out.stdout
    assert "upstream request: GET /room HTTP/1.1" in out.stdout and "upgrade: irc" in out.stdout
