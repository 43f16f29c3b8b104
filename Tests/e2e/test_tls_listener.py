"""TLS listeners against the built binary: certificates chosen by SNI (exact names, wildcards, a
default pair), ALPN choosing HTTP/2 or HTTP/1.1, protocol versions, clients speaking the wrong
protocol, a stalled handshake, and certificates replaced while the proxy serves (a broken file is
rejected and reported, open connections are untouched). Certificates are made at test time
(certs.py). Real clients: curl, openssl s_client and python ssl."""
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from certs import CA, fingerprint, served_names
from conftest import free_port, recv_all, recv_head
from origin import Origin

PLUGIN = """
local M = {}
function M.route(req) return moongate.route("origin") end
return M
"""


def tls_config(port, origin_port, plugin, pairs, admin_port=None, protocols="[http1, http2]", extra_tls="", timeouts=""):
    certs = "".join(
        f"\n        - cert: {c}\n          key: {k}" + (f"\n          names: {names}" if names else "") + ("\n          default: true" if default else "")
        for c, k, names, default in pairs)
    admin = f"admin:\n  address: 127.0.0.1\n  port: {admin_port}\n" if admin_port else ""
    return f"""listeners:
  - name: secure
    address: 127.0.0.1
    port: {port}
    protocols: {protocols}
    tls:
      certificates:{certs}
{extra_tls}clusters:
  - name: origin
    endpoints: ["127.0.0.1:{origin_port}"]
{admin}{timeouts}policy:
  watch: false
  plugins:
    - name: gate
      file: {plugin}
"""


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


@pytest.fixture
def pki(tmp_path):
    ca = CA(tmp_path)
    a = ca.issue("a", ["a.test"])
    b = ca.issue("b", ["*.b.test", "b.test"])
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    return ca, a, b, plugin


def handshake(port, server_name, ca, **context_settings):
    """Handshakes with python ssl; returns (served DNS names, version, ALPN)."""
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.check_hostname = False
    for name, value in context_settings.items():
        setattr(ctx, name, value) if name != "alpn" else ctx.set_alpn_protocols(value)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            return served_names(tls.getpeercert(binary_form=True)), tls.version(), tls.selected_alpn_protocol()


def curl(port, host, ca, *flags):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca.path), "--resolve", f"{host}:{port}:127.0.0.1",
         "-o", "/dev/null", "-w", "%{http_code} %{http_version}", *flags, f"https://{host}:{port}/hello"],
        capture_output=True, text=True, timeout=20)
    return out.stdout.strip(), out.stderr


def start(moongate, tmp_path, origin, pki, **kw):
    ca, a, b, plugin = pki
    port = free_port()
    pairs = kw.pop("pairs", [(a[0], a[1], None, False), (b[0], b[1], None, False)])
    mg = moongate(tls_config(port, origin.port, plugin, pairs, **kw), port)
    return port, mg


def test_certificates_are_chosen_by_sni_with_wildcards_and_a_default(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki)
    assert handshake(port, "a.test", ca)[0] == ["a.test"]
    assert handshake(port, "x.b.test", ca)[0] == ["*.b.test", "b.test"]
    assert handshake(port, "B.TEST", ca)[0] == ["*.b.test", "b.test"]
    # A wildcard covers one label only; unknown names and no SNI get the default (the first) pair.
    assert handshake(port, "deep.x.b.test", ca)[0] == ["a.test"]
    assert handshake(port, "unknown.test", ca)[0] == ["a.test"]
    assert handshake(port, None, ca)[0] == ["a.test"]


def test_the_default_pair_can_be_named_and_names_can_be_configured(moongate, tmp_path, origin, pki):
    ca, a, b, _ = pki
    pairs = [(a[0], a[1], None, False), (b[0], b[1], '["c.test"]', True)]
    port, _ = start(moongate, tmp_path, origin, pki, pairs=pairs)
    assert handshake(port, None, ca)[0] == ["*.b.test", "b.test"]
    assert handshake(port, "c.test", ca)[0] == ["*.b.test", "b.test"]
    assert handshake(port, "a.test", ca)[0] == ["a.test"]


def test_alpn_chooses_http2_or_http1_with_curl(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki)
    assert curl(port, "a.test", ca, "--http2")[0] == "200 2"
    assert curl(port, "a.test", ca, "--http1.1")[0] == "200 1.1"
    assert curl(port, "x.b.test", ca, "--http2")[0] == "200 2"
    assert handshake(port, "a.test", ca, alpn=["h2", "http/1.1"])[2] == "h2"
    assert handshake(port, "a.test", ca, alpn=["http/1.1"])[2] == "http/1.1"
    # The origin saw requests for the routed paths.
    assert [r[1] for r in origin.requests].count("/hello") == 3


def test_an_http1_only_listener_offers_only_http1(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki, protocols="[http1]")
    assert handshake(port, "a.test", ca, alpn=["h2", "http/1.1"])[2] == "http/1.1"
    assert curl(port, "a.test", ca)[0] == "200 1.1"


def test_tls_versions_default_to_1_2_and_1_3_and_min_version_is_configurable(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki)
    assert handshake(port, "a.test", ca, maximum_version=ssl.TLSVersion.TLSv1_2)[1] == "TLSv1.2"
    assert handshake(port, "a.test", ca)[1] == "TLSv1.3"
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.test", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        input="", capture_output=True, text=True, errors="replace", timeout=20)
    assert out.returncode != 0
    port13, _ = start(moongate, tmp_path / "..", origin, pki, extra_tls="      min_version: \"1.3\"\n")
    with pytest.raises(ssl.SSLError):
        handshake(port13, "a.test", ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert handshake(port13, "a.test", ca)[1] == "TLSv1.3"


def test_the_cipher_list_is_configurable(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki, extra_tls="      ciphers: ECDHE-ECDSA-CHACHA20-POLY1305\n")
    ctx_args = dict(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="a.test") as tls:
        assert tls.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305"
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="a.test"):
            pass
    assert handshake(port, "a.test", ca, **ctx_args)[1] == "TLSv1.2"


def test_openssl_s_client_sees_sni_and_alpn(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki)
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "x.b.test", "-alpn", "h2,http/1.1",
         "-CAfile", str(ca.path), "-verify_return_error", "-verify_hostname", "x.b.test"],
        input="", capture_output=True, text=True, errors="replace", timeout=20)
    assert "ALPN protocol: h2" in out.stdout
    assert "Verify return code: 0 (ok)" in out.stdout
    assert "CN = *.b.test" in out.stdout


def test_a_cleartext_client_on_a_tls_listener_gets_a_clear_answer(moongate, tmp_path, origin, pki):
    ca = pki[0]
    port, _ = start(moongate, tmp_path, origin, pki)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 400")
    assert b"speaks TLS" in rest + recv_all(s)
    out = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=20)
    assert "speaks TLS" in out.stdout
    # Still serving TLS.
    assert curl(port, "a.test", ca)[0].startswith("200")


def test_a_tls_client_on_a_cleartext_listener_fails_cleanly(moongate, tmp_path, origin, pki):
    ca, _, _, plugin = pki
    port = free_port()
    moongate(f"""listeners:
  - name: plain
    address: 127.0.0.1
    port: {port}
clusters:
  - name: origin
    endpoints: ["127.0.0.1:{origin.port}"]
policy:
  watch: false
  plugins:
    - name: gate
      file: {plugin}
""", port)
    with pytest.raises(ssl.SSLError):
        handshake(port, "a.test", ca)
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", str(ca.path), f"https://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "SSL" in out.stderr
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/x"],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout == "200"


def test_a_stalled_handshake_is_timed_out(moongate, tmp_path, origin, pki):
    ca = pki[0]
    admin = free_port()
    port, _ = start(moongate, tmp_path, origin, pki, admin_port=admin, timeouts="timeouts:\n  tls_handshake: 1s\n")
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    partial = socket.create_connection(("127.0.0.1", port), timeout=10)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    started = time.time()
    assert silent.recv(100) == b""
    assert partial.recv(100) == b""
    assert time.time() - started < 5
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    assert 'moongate_tls_handshake_failures_total{listener="secure",reason="timeout"} 2' in metrics
    assert curl(port, "a.test", ca)[0].startswith("200")
