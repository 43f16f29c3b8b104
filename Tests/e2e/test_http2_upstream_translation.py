"""Translations through HTTP/2 upstreams (`protocol: http2` clusters): HTTP/1.1 clients' requests,
CONNECTs (CX-XLATE-2: `:method CONNECT` + `:authority` only) and WebSocket handshakes (CX-XLATE-5:
extended CONNECT, with the 101's Sec-WebSocket-Accept made here) become streams of the cluster's
connection; HTTP/2 clients' CONNECT and WebSocket streams reach HTTP/2 clusters too. The origin is
the python h2 server of test_http2_upstream."""
import socket
import subprocess

from conftest import PLUGINS, free_port
from test_http2_limits import Client
from test_http2_upstream import origins, start  # noqa: F401 (the fixture)


def test_http1_clients_reach_an_http2_cluster(moongate, tmp_path, origins):
    origin = origins()
    port = start(moongate, tmp_path, origin)
    run = subprocess.run(["curl", "-s", "-H", "Host: svc.test", f"http://127.0.0.1:{port}/h1a", f"http://127.0.0.1:{port}/h1b",
                          "-d", "hello"], capture_output=True, text=True, timeout=20)
    assert run.stdout == "origin /h1aorigin /h1b"
    assert origin.connections == 1  # both requests were streams of one connection
    head, body = origin.requests[-1][2], origin.requests[-1][3]
    assert head[":method"] == "POST" and head[":authority"] == "svc.test" and body == b"hello"
    assert "connection" not in head and "host" not in head


VIA_H2 = """
local M = {}
function M.connect(req) return moongate.tunnel_via("up") end
return M
"""


def test_cx_xlate_2_and_cx_hc_1_an_http1_connect_goes_to_an_http2_parent_as_method_and_authority_only(moongate, tmp_path, origins):
    origin = origins()
    plugin = tmp_path / "via.lua"
    plugin.write_text(VIA_H2)
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
clusters:
  - name: up
    endpoints: ["127.0.0.1:{origin.port}"]
    protocol: http2
policy:
  watch: false
  plugins:
    - name: via
      file: {plugin}
""", port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"CONNECT site.example:443 HTTP/1.1\r\nHost: site.example:443\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(1000)
        assert data.startswith(b"HTTP/1.1 200")
        s.sendall(b"over h2")
        data = data.partition(b"\r\n\r\n")[2]
        while b"over h2" not in data:
            data += s.recv(1000)
        s.shutdown(socket.SHUT_WR)  # CX-HC-1: the FIN becomes END_STREAM, and the way back stays open
        s.settimeout(5)
        while not data.endswith(b" bye"):
            chunk = s.recv(1000)
            if not chunk:
                break
            data += chunk
        assert data == b"parent: over h2 bye"
    finally:
        s.close()
    head = origin.requests[0][2]
    assert head == {":method": "CONNECT", ":authority": "site.example:443"}  # no :scheme, :path or :protocol


def test_an_http1_upgrade_other_than_websocket_goes_to_an_http2_cluster_as_extended_connect(moongate, tmp_path, origins):
    """`Upgrade: irc` becomes `:protocol irc` (RFC 8441 names no registry limit), the origin's 200 a
    101 naming `irc`, and then bytes flow both ways."""
    origin = origins()
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
clusters:
  - name: up
    endpoints: ["127.0.0.1:{origin.port}"]
    protocol: http2
policy:
  watch: false
  plugins_dir: {PLUGINS}
  plugins:
    - name: host_router
      config:
        upgrades: [irc]
        routes:
          - {{ host: "*", prefix: "/", cluster: up }}
""", port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: irc\r\nConnection: Upgrade\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(1000)
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode().lower().split("\r\n")
        assert lines[0] == "http/1.1 101 switching protocols" and "upgrade: irc" in lines, lines
        s.sendall(b"NICK moon")
        while b"NICK moon" not in data:
            data += s.recv(1000)
        assert data == b"parent: NICK moon"
    finally:
        s.close()
    head = origin.requests[0][2]
    assert head[":method"] == "CONNECT" and head[":protocol"] == "irc" and head[":path"] == "/chat"


def test_cx_xlate_5_an_http1_websocket_goes_to_an_http2_cluster_as_extended_connect(moongate, tmp_path, origins):
    from websockets.sync.client import connect as ws_connect

    origin = origins()
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
clusters:
  - name: up
    endpoints: ["127.0.0.1:{origin.port}"]
    protocol: http2
policy:
  watch: false
  plugins_dir: {PLUGINS}
  plugins:
    - name: host_router
      config:
        upgrades: [websocket]
        routes:
          - {{ host: "*", prefix: "/", cluster: up }}
""", port)
    # The websockets client checks Sec-WebSocket-Accept against its own key: the proxy computed it.
    with ws_connect(f"ws://127.0.0.1:{port}/chat", open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo: hello"
    head = origin.requests[0][2]
    assert head[":method"] == "CONNECT" and head[":protocol"] == "websocket" and head[":path"] == "/chat"
    assert "sec-websocket-key" not in head and "upgrade" not in head and "connection" not in head


def test_cx_proxy_1_an_http2_connect_stream_goes_to_an_http2_parent(moongate, tmp_path, origins):
    origin = origins()
    plugin = tmp_path / "via.lua"
    plugin.write_text(VIA_H2)
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http2]
clusters:
  - name: up
    endpoints: ["127.0.0.1:{origin.port}"]
    protocol: http2
policy:
  watch: false
  plugins:
    - name: via
      file: {plugin}
""", port)
    client = Client(port)
    try:
        streams = [client.connect(f"site{i}.example:443") for i in range(3)]
        client.pump(lambda: all(sid in client.status for sid in streams))
        assert all(client.status[sid] == 200 for sid in streams)
        for i, sid in enumerate(streams):
            client.send(sid, f"h2 {i}".encode(), end_stream=True)
        client.pump(lambda: all(sid in client.ended for sid in streams))
        for i, sid in enumerate(streams):
            assert client.data[sid] == f"parent: h2 {i} bye".encode()
    finally:
        client.close()
    assert origin.connections == 1
    assert sorted(r[2][":authority"] for r in origin.requests) == [f"site{i}.example:443" for i in range(3)]
    assert all(set(r[2]) == {":method", ":authority"} for r in origin.requests)


def test_cx_ext_2_an_http2_websocket_stream_goes_to_an_http2_cluster(moongate, tmp_path, origins):
    from test_http2_websocket import client_frame, open_websocket, parse_texts

    origin = origins()
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http2]
clusters:
  - name: up
    endpoints: ["127.0.0.1:{origin.port}"]
    protocol: http2
policy:
  watch: false
  plugins_dir: {PLUGINS}
  plugins:
    - name: host_router
      config:
        upgrades: [websocket]
        routes:
          - {{ host: "*", prefix: "/", cluster: up }}
""", port)
    client = Client(port)
    try:
        sid = open_websocket(client, port, path="/live")
        client.pump(lambda: sid in client.status)
        assert client.status[sid] == 200
        client.send(sid, client_frame("over two hops"))
        client.pump(lambda: parse_texts(client.data[sid]) == ["echo: over two hops"])
    finally:
        client.close()
    head = origin.requests[0][2]
    assert head[":method"] == "CONNECT" and head[":protocol"] == "websocket" and head[":path"] == "/live"
