"""HTTP/2 to an HTTPS cluster (`protocol: http2` with `tls:`): Moongate offers `h2` by ALPN,
verifies the certificate as for any TLS cluster, and multiplexes requests as streams of one
connection. A server that selects `http/1.1` (or nothing) fails the ALPN check: a 502 naming it,
in the log and in `moongate_upstream_tls_failures_total{reason="alpn"}`. The origin is python
`h2` behind python `ssl`; the clients are curl over HTTP/1.1 and HTTP/2."""
import json
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
from conftest import free_port

PLUGIN = """
local M = {}
function M.route(req) return moongate.route("secure") end
return M
"""


class H2TLSOrigin:
    """An HTTPS origin on loopback that speaks HTTP/2 (or only HTTP/1.1 by ALPN, `alpn`), answering
    each stream with `h2 <path>`; records connections, SNI names and request heads."""

    def __init__(self, cert, key, alpn=("h2",)):
        self.connections = 0
        self.sni = []
        self.heads = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.set_alpn_protocols(list(alpn))
        ctx.sni_callback = lambda sock, name, _: self.sni.append(name) and None
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.connections += 1
        if tls.selected_alpn_protocol() != "h2":
            tls.close()
            return
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        heads = {}
        try:
            while True:
                data = tls.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                                                  for k, v in event.headers}
                        self.heads.append(heads[event.stream_id])
                    elif isinstance(event, h2.events.StreamEnded):
                        body = f"h2 {heads[event.stream_id][':path']}".encode()
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body, end_stream=True)
                tls.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError):
            return
        finally:
            tls.close()

    def close(self):
        self.closed = True
        self.sock.close()


def config(port, admin, origin_port, plugin, ca, extra_tls="", proto="http2"):
    return f"""event_loop_threads: 1
listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
admin:
  address: 127.0.0.1
  port: {admin}
clusters:
  - name: secure
    endpoints: ["127.0.0.1:{origin_port}"]
    protocol: {proto}
    tls:
      sni: origin.test
      ca_file: {ca.path}
{extra_tls}policy:
  watch: false
  plugins:
    - name: gate
      file: {plugin}
"""


@pytest.fixture
def setup(tmp_path):
    ca = CA(tmp_path)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    made = []

    def origin(**kw):
        cert, key = ca.issue(f"origin{len(made)}", ["origin.test"])
        o = H2TLSOrigin(cert, key, **kw)
        made.append(o)
        return o

    yield ca, plugin, origin
    for o in made:
        o.close()


def curl(port, *args):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", *args, "-w", "\n%{http_code}"],
                         capture_output=True, text=True, timeout=20)
    body, _, status = out.stdout.rpartition("\n")
    return int(status or 0), body


def test_requests_reach_an_https_http2_cluster_as_streams_of_one_verified_connection(moongate, setup):
    ca, plugin, origin = setup
    o = origin()
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, ca), port)
    assert curl(port, f"http://127.0.0.1:{port}/one", "-H", "Host: site.test") == (200, "h2 /one")
    assert curl(port, "--http2-prior-knowledge", f"http://127.0.0.1:{port}/two") == (200, "h2 /two")
    assert o.connections == 1 and o.sni == ["origin.test"]
    assert [h[":path"] for h in o.heads] == ["/one", "/two"] and o.heads[0][":scheme"] == "https"


def test_a_server_that_does_not_select_h2_is_a_502_naming_alpn(moongate, setup):
    ca, plugin, origin = setup
    o = origin(alpn=("http/1.1",))
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, ca), port)
    status, body = curl(port, f"http://127.0.0.1:{port}/x")
    assert status == 502 and "alpn" in body, body
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    assert 'reason="alpn"' in text


def test_an_untrusted_certificate_on_an_http2_cluster_is_a_502(moongate, setup, tmp_path):
    ca, plugin, origin = setup
    o = origin()
    stranger = CA(tmp_path / "..", name=f"Stranger CA {tmp_path.name}")
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, stranger), port)
    status, body = curl(port, f"http://127.0.0.1:{port}/x")
    assert status == 502 and "certificate" in body, body


def test_alpn_that_cannot_confirm_the_clusters_protocol_is_refused_at_load(tmp_path):
    from conftest import BIN
    ca = CA(tmp_path)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    path = tmp_path / "bad.yaml"
    path.write_text(config(free_port(), free_port(), 1, plugin, ca, extra_tls="      alpn: [http/1.1]\n"))
    out = subprocess.run([BIN, "validate", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "bad.yaml" in out.stderr + out.stdout and "its alpn must offer h2" in out.stderr + out.stdout


def test_http2_over_tls_inside_a_parent_proxys_tunnel(moongate, setup):
    """`via:` with `protocol: http2`: CONNECT to the parent in the clear, then TLS with ALPN h2 to
    the origin inside the tunnel; the parent sees only a handshake record after its 200."""
    from test_tls_via import Parent
    ca, plugin, origin = setup
    o = origin()
    parent = Parent()
    try:
        port, admin = free_port(), free_port()
        text = config(port, admin, o.port, plugin, ca).replace(
            "clusters:\n", f'clusters:\n  - name: parent\n    endpoints: ["127.0.0.1:{parent.port}"]\n').replace(
            "    protocol: http2\n", "    protocol: http2\n    via: parent\n")
        moongate(text, port)
        assert curl(port, f"http://127.0.0.1:{port}/deep") == (200, "h2 /deep")
        assert parent.targets == [f"127.0.0.1:{o.port}"] and parent.first_bytes == [0x16]
        assert o.sni == ["origin.test"] and o.heads[0][":scheme"] == "https"
    finally:
        parent.close()


def test_an_auto_cluster_speaks_http2_to_a_server_that_selects_h2(moongate, setup):
    """`protocol: auto` offers h2 and http/1.1; this server chooses h2, so requests of both client
    protocols are streams of one connection."""
    ca, plugin, origin = setup
    o = origin(alpn=("h2", "http/1.1"))
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, ca, proto="auto"), port)
    assert curl(port, f"http://127.0.0.1:{port}/first") == (200, "h2 /first")
    assert curl(port, "--http2-prior-knowledge", f"http://127.0.0.1:{port}/second") == (200, "h2 /second")
    assert curl(port, "--http2-prior-knowledge", f"http://127.0.0.1:{port}/third") == (200, "h2 /third")
    assert o.connections == 1 and [h[":path"] for h in o.heads] == ["/first", "/second", "/third"]


def test_an_auto_cluster_speaks_http1_to_a_server_without_h2(moongate, setup):
    """The server selects no protocol (python's http.server behind ssl): the first connection
    tells the loop, the request goes over HTTP/1.1, and later ones reuse its pooled connection."""
    from test_tls_upstream import TLSOrigin
    ca, plugin, _ = setup
    cert, key = ca.issue("plain-origin", ["origin.test"])
    o = TLSOrigin(cert, key)
    try:
        port, admin = free_port(), free_port()
        moongate(config(port, admin, o.port, plugin, ca, proto="auto"), port)
        for path, args in [("/a", ()), ("/b", ("--http2-prior-knowledge",)), ("/c", ())]:
            status, body = curl(port, *args, f"http://127.0.0.1:{port}{path}")
            assert status == 200 and json.loads(body)["path"] == path, body
        # One handshake that learned HTTP/1.1, one HTTP/1.1 connection pooled for the three requests.
        assert len(o.sni) == 2, o.sni
    finally:
        o.close()
