"""TLS toward clusters: an HTTPS origin reached with verification against a CA file, SNI from the
config or the endpoint, and refusals (expired or wrong-name certificates, an untrusted CA) that
answer 502 with the reason in the log and a metric, unless verification is skipped, which
`moongate validate` warns about. The origin is python's http.server behind python ssl."""
import http.server
import json
import socket
import socketserver
import ssl
import subprocess
import threading
import urllib.request

import pytest

from certs import CA
from conftest import BIN, free_port, recv_all

PLUGIN = """
local M = {}
function M.route(req) return moongate.route("secure") end
return M
"""


class TLSOrigin:
    """An HTTPS origin on loopback that answers JSON with the SNI it was asked for."""

    def __init__(self, cert, key, client_ca=None):
        origin = self
        self.sni = []
        self.client_subjects = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                peer = self.connection.getpeercert()
                if peer:
                    origin.client_subjects.append(dict(x[0] for x in peer["subject"]).get("commonName"))
                body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca:
            ctx.load_verify_locations(str(client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.sni_callback = lambda sock, name, _: self.sni.append(name) and None
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def config(port, admin, origin_port, plugin, tls_block, endpoint_host="127.0.0.1"):
    return f"""listeners:
  - name: plain
    address: 127.0.0.1
    port: {port}
admin:
  address: 127.0.0.1
  port: {admin}
clusters:
  - name: secure
    endpoints: ["{endpoint_host}:{origin_port}"]
    tls:
{tls_block}policy:
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

    def origin(names, **kw):
        cert, key = ca.issue(f"origin{len(made)}", names, expired=kw.pop("expired", False))
        o = TLSOrigin(cert, key, **kw)
        made.append(o)
        return o

    yield ca, plugin, origin, tmp_path
    for o in made:
        o.close()


def get(port, path="/x"):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}",
                          "-H", "Host: site.test"], capture_output=True, text=True, timeout=20)
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


def metrics(admin):
    return urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()


def test_an_https_origin_is_verified_with_the_ca_file_and_sni_from_the_config(moongate, setup):
    ca, plugin, origin, _ = setup
    o = origin(["origin.test"])
    port, admin = free_port(), free_port()
    # One event loop, so both requests use that loop's pool of upstream connections.
    text = "event_loop_threads: 1\n" + config(port, admin, o.port, plugin, f"      sni: origin.test\n      ca_file: {ca.path}\n")
    moongate(text, port)
    status, body = get(port, "/hello")
    assert status == 200 and json.loads(body)["path"] == "/hello"
    assert o.sni[-1] == "origin.test"
    # The connection is pooled: a second request needs no new handshake.
    assert get(port, "/again")[0] == 200
    assert len(o.sni) == 1


def test_sni_defaults_to_the_endpoint_host_and_an_ip_endpoint_is_checked_by_address(moongate, setup):
    ca, plugin, origin, _ = setup
    o = origin(["localhost", "127.0.0.1"])
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, f"      ca_file: {ca.path}\n", endpoint_host="localhost"), port)
    assert get(port)[0] == 200
    assert o.sni[-1] == "localhost"
    port2, admin2 = free_port(), free_port()
    moongate(config(port2, admin2, o.port, plugin, f"      ca_file: {ca.path}\n"), port2, name="by-ip")
    assert get(port2)[0] == 200
    assert o.sni[-1] is None


@pytest.mark.parametrize("problem", ["expired", "wrong name", "untrusted"])
def test_a_bad_upstream_certificate_is_a_502_with_the_reason(moongate, setup, problem):
    ca, plugin, origin, tmp_path = setup
    if problem == "expired":
        o, trust = origin(["origin.test"], expired=True), ca.path
    elif problem == "wrong name":
        o, trust = origin(["elsewhere.test"]), ca.path
    else:
        o, trust = origin(["origin.test"]), CA(tmp_path / "..", name="Another CA").path
    port, admin = free_port(), free_port()
    mg = moongate(config(port, admin, o.port, plugin, f"      sni: origin.test\n      ca_file: {trust}\n"), port)
    status, body = get(port)
    assert status == 502
    assert "upstream TLS failed" in body
    assert "upstream TLS failed" in mg.logs()
    assert 'moongate_upstream_tls_failures_total{cluster="secure"' in metrics(admin)


def test_insecure_skip_verify_accepts_a_bad_certificate_and_validate_warns(moongate, setup):
    ca, plugin, origin, tmp_path = setup
    o = origin(["elsewhere.test"], expired=True)
    port, admin = free_port(), free_port()
    text = config(port, admin, o.port, plugin, "      sni: origin.test\n      insecure_skip_verify: true\n")
    mg = moongate(text, port)
    assert get(port)[0] == 200
    out = subprocess.run([BIN, "validate", "--config", str(mg.config)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "cluster secure: tls.insecure_skip_verify is on" in out.stderr


def test_a_client_certificate_is_presented_to_an_origin_that_requires_one(moongate, setup):
    ca, plugin, origin, tmp_path = setup
    o = origin(["origin.test"], client_ca=ca.path)
    cert, key = ca.issue("proxy-client", ["proxy.test"], client=True, common_name="moongate-proxy")
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, f"      sni: origin.test\n      ca_file: {ca.path}\n      cert: {cert}\n      key: {key}\n"), port)
    assert get(port)[0] == 200
    assert o.client_subjects == ["moongate-proxy"]
    # Without the certificate, the origin refuses the handshake: 502.
    port2, admin2 = free_port(), free_port()
    moongate(config(port2, admin2, o.port, plugin, f"      sni: origin.test\n      ca_file: {ca.path}\n"), port2, name="nocert")
    assert get(port2)[0] == 502


def test_a_tunnel_through_a_parent_proxy_whose_certificate_fails_is_a_503(moongate, setup):
    ca, _, origin, tmp_path = setup
    o = origin(["elsewhere.test"])
    plugin = tmp_path / "via.lua"
    plugin.write_text('local M = {}\nfunction M.connect(req) return moongate.tunnel_via("secure") end\nreturn M\n')
    port, admin = free_port(), free_port()
    moongate(config(port, admin, o.port, plugin, f"      sni: parent.test\n      ca_file: {ca.path}\n"), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n")
    assert recv_all(s).startswith(b"HTTP/1.1 503")
    assert 'moongate_upstream_tls_failures_total{cluster="secure",reason="hostname"}' in metrics(admin) \
        or 'moongate_upstream_tls_failures_total{cluster="secure",reason="certificate"}' in metrics(admin)
