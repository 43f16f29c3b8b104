"""The shipped TLS example configs, each run with certificates made at test time in a certs/
folder beside a copy of the config: configs/tls_listener.yaml (two certificates chosen by SNI) and
configs/https_origin.yaml (a verified HTTPS origin). configs/https_forward_proxy.yaml is run by
test_tls_proxy.py."""
import json
import re
import socket
import ssl
import subprocess

from certs import CA, served_names
from conftest import PLUGINS, ROOT, free_port
from origin import Origin
from test_tls_upstream import TLSOrigin


def adapt(name, tmp_path, ports):
    text = (ROOT / "configs" / name).read_text().replace("plugins_dir: ../plugins", f"plugins_dir: {PLUGINS}")
    for old, new in ports.items():
        text = re.sub(rf"\b{old}\b", str(new), text)
    return text


def test_tls_listener_config_serves_two_sites_by_sni(moongate, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = CA(certs)
    ca.issue("api", ["api.example.test"])
    ca.issue("wildcard", ["*.example.test"])
    api, web = Origin(), Origin()
    try:
        port, admin = free_port(), free_port()
        moongate(adapt("tls_listener.yaml", tmp_path, {8443: port, 9904: admin, 9001: api.port, 9002: web.port}), port)
        for host, expected, origin in [("api.example.test", ["api.example.test"], api), ("www.example.test", ["*.example.test"], web)]:
            ctx = ssl.create_default_context(cafile=str(ca.path))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
                assert served_names(tls.getpeercert(binary_form=True)) == expected
            out = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2", "--cacert", str(ca.path),
                                  "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/page"],
                                 capture_output=True, text=True, timeout=20)
            assert json.loads(out.stdout)["path"] == "/page", out.stderr
            assert origin.requests[-1][1] == "/page"
            # header_sanitizer's Forwarded says the client came over TLS.
            assert "proto=https" in {k.lower(): v for k, v in origin.requests[-1][2].items()}.get("forwarded", "")
    finally:
        api.close()
        web.close()


def test_https_origin_config_reaches_a_verified_origin(moongate, tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = CA(certs)
    (certs / "ca.pem").write_bytes(ca.path.read_bytes())
    cert, key = ca.issue("origin", ["origin.example.test"])
    origin = TLSOrigin(cert, key)
    try:
        port, admin = free_port(), free_port()
        moongate(adapt("https_origin.yaml", tmp_path, {8080: port, 9905: admin, 9443: origin.port}), port)
        out = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Host: anything.test", f"http://127.0.0.1:{port}/via-tls"],
                             capture_output=True, text=True, timeout=20)
        assert json.loads(out.stdout)["path"] == "/via-tls", out.stderr
        assert origin.sni == ["origin.example.test"]
    finally:
        origin.close()
