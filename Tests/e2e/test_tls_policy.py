"""Mutual TLS into policy: client certificates asked for (`client_cert: request|require`) and
verified against `client_ca`, and what a script reads in `req.client.tls` (version, ALPN, SNI and
a verified certificate's subject, SANs and SHA-256), over HTTP/1.1 and HTTP/2; `moongate decide
--tls` and test cases that state the session. Clients: python ssl, curl, openssl s_client."""
import json
import socket
import ssl
import subprocess

import pytest

from certs import CA, fingerprint
from conftest import BIN, free_port, recv_all, recv_head
from test_tls_listener import tls_config

PLUGIN = r"""
local M = {}
local function q(s) return s and ('"' .. s .. '"') or "null" end
function M.route(req)
  local tls = req.client.tls
  if not tls then return moongate.deny(426, "TLS only") end
  if tls.subject and tls.subject:find("CN=mallory", 1, true) then return moongate.deny(403, "not mallory") end
  local sans = tls.sans and ('["' .. table.concat(tls.sans, '","') .. '"]') or "null"
  return moongate.respond(200, "{" ..
    '"version":' .. q(tls.version) .. ',"alpn":' .. q(tls.alpn) .. ',"sni":' .. q(tls.sni) .. ',"cipher":' .. q(tls.cipher) ..
    ',"subject":' .. q(tls.subject) .. ',"sans":' .. sans .. ',"sha256":' .. q(tls.sha256) .. "}")
end
M.tests = {
  { request = "GET https://a.test/", tls = { sni = "a.test", subject = "CN=mallory" }, expect = "deny 403" },
  { request = "GET https://a.test/", tls = { sni = "a.test", subject = "CN=alice" }, expect = "respond 200" },
  { request = "GET http://a.test/", expect = "deny 426" },
}
return M
"""


@pytest.fixture
def mtls(moongate, tmp_path):
    """Starts a listener asking for client certificates in `mode`; returns (port, ca, paths)."""
    ca = CA(tmp_path)
    server = ca.issue("a", ["a.test"])
    alice = ca.issue("alice", ["alice.test", "ops.test"], client=True, common_name="alice")
    mallory = ca.issue("mallory", ["mallory.test"], client=True, common_name="mallory")
    stranger_ca = CA(tmp_path / "..", name=f"Stranger CA {tmp_path.name}")
    stranger = stranger_ca.issue("stranger", ["stranger.test"], client=True)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)

    def start(mode):
        port = free_port()
        extra = f"      client_ca: {ca.path}\n      client_cert: {mode}\n"
        moongate(tls_config(port, free_port(), plugin, [(server[0], server[1], None, False)], extra_tls=extra), port, name=mode)
        return port

    return start, ca, {"alice": alice, "mallory": mallory, "stranger": stranger}


negotiated = {}


def fetch(port, ca, cert=None, alpn=None, tls12_cipher=None):
    """One HTTP/1.1 request over python ssl; returns (status line, body). `tls12_cipher` holds the
    client to TLS 1.2 and that one suite (OpenSSL's name)."""
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if tls12_cipher:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(tls12_cipher)
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="a.test") as tls:
        negotiated["cipher"] = tls.cipher()[0]
        tls.sendall(b"GET /who HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        head, rest = recv_head(tls)
        return head.split("\r\n")[0], rest + recv_all(tls)


def test_a_verified_client_certificate_reaches_policy(mtls):
    start, ca, people = mtls
    port = start("require")
    status, body = fetch(port, ca, people["alice"], alpn=["http/1.1"])
    assert status == "HTTP/1.1 200 OK"
    seen = json.loads(body)
    assert seen["version"] == "TLSv1.3" and seen["alpn"] == "http/1.1" and seen["sni"] == "a.test"
    assert "CN=alice" in seen["subject"] and "O=Moongate tests" in seen["subject"]
    assert seen["sans"] == ["alice.test", "ops.test"]
    assert seen["sha256"] == fingerprint(people["alice"][0])
    # The suite python's ssl negotiated, by its IETF name.
    assert seen["cipher"] == negotiated["cipher"] and seen["cipher"].startswith("TLS_")
    assert fetch(port, ca, people["mallory"])[0].startswith("HTTP/1.1 403")


def test_policy_sees_a_tls12_cipher_suite_by_its_ietf_name(mtls):
    start, ca, people = mtls
    port = start("request")
    status, body = fetch(port, ca, alpn=["http/1.1"], tls12_cipher="ECDHE-ECDSA-CHACHA20-POLY1305")
    seen = json.loads(body)
    assert status == "HTTP/1.1 200 OK" and seen["version"] == "TLSv1.2"
    assert seen["cipher"] == "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"


def test_policy_sees_the_session_over_http2_with_curl(mtls):
    start, ca, people = mtls
    port = start("require")
    cert, key = people["alice"]
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--http2", "--cacert", str(ca.path), "--cert", str(cert), "--key", str(key),
         "--resolve", f"a.test:{port}:127.0.0.1", f"https://a.test:{port}/who"], capture_output=True, text=True, timeout=20)
    seen = json.loads(out.stdout)
    assert seen["alpn"] == "h2" and seen["sha256"] == fingerprint(cert)


def test_require_refuses_clients_without_a_trusted_certificate(mtls):
    start, ca, people = mtls
    port = start("require")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        fetch(port, ca)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        fetch(port, ca, people["stranger"])
    assert fetch(port, ca, people["alice"])[0].startswith("HTTP/1.1 200")


def test_request_serves_clients_without_a_certificate_but_not_untrusted_ones(mtls):
    start, ca, people = mtls
    port = start("request")
    status, body = fetch(port, ca)
    assert status.startswith("HTTP/1.1 200")
    assert json.loads(body)["subject"] is None
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        fetch(port, ca, people["stranger"])
    assert json.loads(fetch(port, ca, people["alice"])[1])["sans"] == ["alice.test", "ops.test"]


def test_decide_takes_the_session_on_the_command_line(tmp_path):
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policy:\n  watch: false\n  plugins:\n    - name: gate\n      file: {plugin}\n")
    out = subprocess.run([BIN, "decide", "--config", str(cfg), "--request", "GET https://a.test/",
                          "--tls", "sni=a.test,alpn=h2,subject=CN=mallory,O=Evil"], capture_output=True, text=True, timeout=30)
    assert "decision: deny 403" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([BIN, "decide", "--config", str(cfg), "--request", "GET https://a.test/",
                          "--tls", "sni=a.test,alpn=h2,sans=x.test|y.test"], capture_output=True, text=True, timeout=30)
    assert "decision: respond 200" in out.stdout
    out = subprocess.run([BIN, "decide", "--config", str(cfg), "--request", "GET https://a.test/"], capture_output=True, text=True, timeout=30)
    assert "decision: deny 426" in out.stdout
    out = subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "3 tests passed" in out.stdout
