"""HTTPS proxying: a client reaches the proxy itself over TLS, then sends absolute-form requests or
CONNECT inside it, over HTTP/1.1 (curl --proxy https://...) and over HTTP/2 (a CONNECT stream
inside TLS with ALPN h2, as browsers do; python h2). Also the shipped configs/https_forward_proxy.yaml."""
import json
import socket
import ssl
import subprocess

import h2.config
import h2.connection
import h2.events
import pytest

from certs import CA
from conftest import PLUGINS, ROOT, echo, free_port
from origin import Origin

PLUGIN = """
local M = {}
function M.connect(req) if req.target.host == "127.0.0.1" then return moongate.tunnel() end end
function M.route(req) return moongate.forward() end
return M
"""


@pytest.fixture
def proxy(moongate, tmp_path):
    ca = CA(tmp_path)
    cert, key = ca.issue("proxy", ["proxy.test", "127.0.0.1"])
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    origin = Origin()
    port = free_port()
    moongate(f"""listeners:
  - name: proxy
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
    tls:
      certificates:
        - cert: {cert}
          key: {key}
policy:
  watch: false
  allowed_addresses: ["127.0.0.1"]
  plugins:
    - name: gate
      file: {plugin}
""", port)
    yield port, ca, origin
    origin.close()


def curl(port, ca, *args):
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy", f"https://127.0.0.1:{port}", "--proxy-cacert", str(ca.path), *args],
                          capture_output=True, text=True, timeout=20)


def test_absolute_form_requests_inside_tls(proxy):
    port, ca, origin = proxy
    out = curl(port, ca, f"http://127.0.0.1:{origin.port}/through-tls")
    assert json.loads(out.stdout)["path"] == "/through-tls", out.stderr


def test_connect_inside_tls_with_curl(proxy):
    port, ca, origin = proxy
    out = curl(port, ca, "--proxytunnel", f"http://127.0.0.1:{origin.port}/tunnelled")
    assert json.loads(out.stdout)["path"] == "/tunnelled", out.stderr
    assert origin.requests[-1][0] == "GET"


def test_an_http2_connect_stream_inside_tls(proxy, servers):
    port, ca, _ = proxy
    target = servers(echo)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="proxy.test")
    assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "CONNECT"), (":authority", f"127.0.0.1:{target.port}")])
    sock.sendall(conn.data_to_send())
    status, echoed, sent = None, b"", False
    for _ in range(200):
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[":status"]
                conn.send_data(1, b"ping through h2 in tls")
                sent = True
            elif isinstance(event, h2.events.DataReceived):
                echoed += event.data
                conn.acknowledge_received_data(len(event.data), 1)
        sock.sendall(conn.data_to_send())
        if sent and echoed == b"ping through h2 in tls":
            break
    sock.close()
    assert status == "200"
    assert echoed == b"ping through h2 in tls"


def test_the_https_forward_proxy_config(moongate, tmp_path):
    ca = CA(tmp_path)
    certs = tmp_path / "certs"
    certs.mkdir()
    ca.folder = certs
    ca.issue("proxy", ["127.0.0.1"])
    port = free_port()
    text = (ROOT / "configs" / "https_forward_proxy.yaml").read_text()
    text = text.replace("plugins_dir: ../plugins", f"plugins_dir: {PLUGINS}").replace("3129", str(port))
    origin = Origin()
    try:
        moongate(text, port)
        out = curl(port, ca, "--proxytunnel", f"http://127.0.0.1:{origin.port}/x")
        # The TLS session to the proxy is up, and the allowlist (port 443 only) refuses this CONNECT.
        assert "403" in out.stderr and "SSL" not in out.stderr
    finally:
        origin.close()
