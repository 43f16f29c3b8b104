"""TLS originated by Moongate inside a tunnel: a script answers a CONNECT with
`moongate.tunnel{ tls = { sni = ..., verify = ... } }` (or `tunnel_via(parent, { tls = ... })`),
the client sends cleartext, and the target receives it encrypted (SNI and verification against
`tunnel_tls.ca_file`). A certificate that does not verify is a 503, never a 200; `verify = false`
accepts it. Over HTTP/1.1 and HTTP/2 CONNECT, and through a parent proxy in one hop."""
import socket
import ssl
import subprocess
import threading
import urllib.request

import h2.config
import h2.connection
import h2.events
import pytest

from certs import CA
from conftest import BIN, free_port, recv_all, recv_exactly, recv_head
from test_tls_via import Parent

PLUGIN = """
local M = {}
function M.connect(req)
  local port = req.target.port
  if req.target.host ~= "127.0.0.1" then return nil end
  if req:header("x-verify") == "no" then return moongate.tunnel{ tls = { sni = "secure.test", verify = false } } end
  return moongate.tunnel{ tls = { sni = "secure.test" } }
end
M.tests = {
  { request = "CONNECT 127.0.0.1:443", expect = "tunnel" },
}
return M
"""


class TLSEcho:
    """A TLS server on loopback that echoes what it decrypts, upper-cased, and records the SNI."""

    def __init__(self, cert, key):
        self.sni = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.sni_callback = lambda sock, name, _: self.sni.append(name) and None
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            tls = self.ctx.wrap_socket(conn, server_side=True)
            while True:
                data = tls.recv(65536)
                if not data:
                    break
                tls.sendall(data.upper())
            tls.close()
        except (OSError, ssl.SSLError):
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def setup(moongate, tmp_path):
    ca = CA(tmp_path)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    made = []

    def start(names):
        target = TLSEcho(*ca.issue(f"target{len(made)}", names))
        made.append(target)
        port, admin = free_port(), free_port()
        moongate(f"""listeners:
  - name: proxy
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
admin:
  address: 127.0.0.1
  port: {admin}
tunnel_tls:
  ca_file: {ca.path}
policy:
  watch: false
  allowed_addresses: ["127.0.0.1"]
  plugins:
    - name: gate
      file: {plugin}
""", port, name=f"mg{len(made)}")
        return port, admin, target

    yield start
    for target in made:
        target.close()


def connect(port, target_port, extra=""):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: 127.0.0.1:{target_port}\r\n{extra}\r\n".encode())
    return s


def test_cleartext_in_the_tunnel_reaches_the_target_encrypted(setup):
    port, _, target = setup(["secure.test"])
    s = connect(port, target.port)
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    s.sendall(b"hello over tls")
    assert rest + recv_exactly(s, 14 - len(rest)) == b"HELLO OVER TLS"
    assert target.sni == ["secure.test"]
    s.close()


def test_a_certificate_that_does_not_verify_is_a_503_unless_verify_is_off(setup):
    port, admin, target = setup(["elsewhere.test"])
    s = connect(port, target.port)
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 503")
    assert b"TLS to the target failed" in rest + recv_all(s, timeout=2)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    assert 'moongate_upstream_tls_failures_total{cluster="tunnel"' in metrics
    s = connect(port, target.port, "X-Verify: no\r\n")
    assert recv_head(s)[0].startswith("HTTP/1.1 200")
    s.sendall(b"anyway")
    assert recv_exactly(s, 6) == b"ANYWAY"


def h2_connect(port, target_port, payload=b"via h2"):
    """An HTTP/2 CONNECT stream to the target: sends `payload` once answered 200; returns the
    status and what came back (the payload upper-cased by the TLS echo, or an error body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "CONNECT"), (":authority", f"127.0.0.1:{target_port}")])
    sock.sendall(conn.data_to_send())
    status, echoed = None, b""
    for _ in range(200):
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[":status"]
                if status == "200":
                    conn.send_data(1, payload)
            elif isinstance(event, h2.events.DataReceived):
                echoed += event.data
                conn.acknowledge_received_data(len(event.data), 1)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                sock.close()
                return status, echoed
        sock.sendall(conn.data_to_send())
        if echoed == payload.upper():
            break
    sock.close()
    return status, echoed


def test_an_http2_connect_stream_gets_tls_toward_the_target(setup):
    port, _, target = setup(["secure.test"])
    assert h2_connect(port, target.port) == ("200", b"VIA H2")


def test_bad_tunnel_options_are_a_script_fault_at_load(tmp_path):
    plugin = tmp_path / "bad.lua"
    plugin.write_text('local M = {}\nfunction M.connect(req) return moongate.tunnel{ tls = { sni = 5 } } end\n'
                      'M.tests = { { request = "CONNECT a.test:443", expect = "tunnel" } }\nreturn M\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policy:\n  watch: false\n  plugins:\n    - name: bad\n      file: {plugin}\n")
    out = subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "tls.sni must be a string" in out.stderr


def test_decide_shows_the_tls_a_tunnel_asks_for(tmp_path):
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policy:\n  watch: false\n  plugins:\n    - name: gate\n      file: {plugin}\n")
    out = subprocess.run([BIN, "decide", "--config", str(cfg), "--request", "CONNECT 127.0.0.1:443"],
                         capture_output=True, text=True, timeout=30)
    assert "decision: tunnel" in out.stdout and "tls:      to the target, sni secure.test, verify true" in out.stdout


VIA = """
local M = {}
function M.connect(req) return moongate.tunnel_via("parent", { tls = { sni = "secure.test" } }) end
return M
"""


@pytest.mark.parametrize("client", ["http1", "http2"])
@pytest.mark.parametrize("names, ok", [(["secure.test"], True), (["elsewhere.test"], False)])
def test_tls_toward_the_target_inside_a_parent_proxys_tunnel(moongate, tmp_path, names, ok, client):
    ca = CA(tmp_path)
    target = TLSEcho(*ca.issue("target", names))
    parent = Parent()
    plugin = tmp_path / "via.lua"
    plugin.write_text(VIA)
    port = free_port()
    try:
        moongate(f"""listeners:
  - name: proxy
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
clusters:
  - name: parent
    endpoints: ["127.0.0.1:{parent.port}"]
tunnel_tls:
  ca_file: {ca.path}
policy:
  watch: false
  plugins:
    - name: via
      file: {plugin}
""", port)
        if client == "http2":
            status, body = h2_connect(port, target.port, b"through the parent")
            assert parent.targets == [f"127.0.0.1:{target.port}"] and parent.first_bytes == [0x16]
            if not ok:
                assert status == "503" and b"TLS to the target failed" in body, (status, body)
                return
            assert (status, body) == ("200", b"THROUGH THE PARENT") and target.sni == ["secure.test"]
            return
        s = connect(port, target.port)
        head, rest = recv_head(s)
        assert parent.targets == [f"127.0.0.1:{target.port}"]
        assert parent.first_bytes == [0x16]  # the parent sees a TLS handshake, not the client's bytes
        if not ok:
            assert head.startswith("HTTP/1.1 503") and b"TLS to the target failed" in rest + recv_all(s, timeout=2)
            return
        assert head.startswith("HTTP/1.1 200")
        s.sendall(b"through the parent")
        assert recv_exactly(s, 18) == b"THROUGH THE PARENT"
        assert target.sni == ["secure.test"]
    finally:
        target.close()
        parent.close()
