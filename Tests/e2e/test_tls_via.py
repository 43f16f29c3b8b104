"""A cluster reached through a parent HTTP proxy (`via:`), with TLS to the real origin inside the
parent's tunnel, in one hop: the parent receives `CONNECT host:port` in the clear and then only
ciphertext; SNI and verification are the origin's. Also a parent that refuses, a bad origin
certificate behind the parent, and configs/origin_via_parent.yaml."""
import json
import re
import socket
import subprocess
import threading
import urllib.request

import pytest

from certs import CA
from conftest import PLUGINS, ROOT, ThreadedServer, free_port, recv_head
from test_tls_upstream import PLUGIN, TLSOrigin


class Parent:
    """A CONNECT proxy on loopback: records each CONNECT target and the first byte sent inside the
    tunnel, dials 127.0.0.1 at the target's port (names resolve to loopback here), relays both ways."""

    def __init__(self, refuse=False):
        self.targets, self.first_bytes, self.refuse = [], [], refuse
        self.server = ThreadedServer(self._run)
        self.port = self.server.port

    def _run(self, server, conn):
        head, rest = recv_head(conn)
        target = head.split("\r\n")[0].split(" ")[1]
        self.targets.append(target)
        if self.refuse:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = socket.create_connection(("127.0.0.1", int(target.rsplit(":", 1)[1])), timeout=10)
        conn.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        first = [True]

        def pump(src, dst, record):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if record and first[0]:
                        self.first_bytes.append(data[0])
                        first[0] = False
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        if rest:
            self.first_bytes.append(rest[0])
            first[0] = False
            upstream.sendall(rest)
        back = threading.Thread(target=pump, args=(upstream, conn, False), daemon=True)
        back.start()
        pump(conn, upstream, True)
        back.join(timeout=10)
        upstream.close()

    def close(self):
        self.server.close()


def config(port, admin, parent_port, origin_port, plugin, ca_path, host="origin.test"):
    return f"""listeners:
  - name: web
    address: 127.0.0.1
    port: {port}
admin:
  address: 127.0.0.1
  port: {admin}
clusters:
  - name: parent
    endpoints: ["127.0.0.1:{parent_port}"]
  - name: secure
    endpoints: ["{host}:{origin_port}"]
    via: parent
    tls:
      ca_file: {ca_path}
policy:
  watch: false
  plugins:
    - name: gate
      file: {plugin}
"""


@pytest.fixture
def parts(tmp_path):
    ca = CA(tmp_path)
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    made = []
    yield ca, plugin, made
    for thing in made:
        thing.close()


def get(port):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/deep",
                          "-H", "Host: site.test"], capture_output=True, text=True, timeout=20)
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


def test_tls_to_the_origin_runs_inside_the_parents_tunnel(moongate, parts):
    ca, plugin, made = parts
    origin = TLSOrigin(*ca.issue("origin", ["origin.test"]))
    parent = Parent()
    made += [origin, parent]
    port, admin = free_port(), free_port()
    moongate(config(port, admin, parent.port, origin.port, plugin, ca.path), port)
    status, body = get(port)
    assert status == 200 and json.loads(body)["path"] == "/deep"
    assert parent.targets == [f"origin.test:{origin.port}"]
    assert parent.first_bytes == [0x16]  # a TLS handshake record: the parent sees no HTTP
    assert origin.sni == ["origin.test"]


def test_a_parent_that_refuses_is_a_502(moongate, parts):
    ca, plugin, made = parts
    origin = TLSOrigin(*ca.issue("origin", ["origin.test"]))
    parent = Parent(refuse=True)
    made += [origin, parent]
    port, admin = free_port(), free_port()
    mg = moongate(config(port, admin, parent.port, origin.port, plugin, ca.path), port)
    status, body = get(port)
    assert status == 502 and "parent proxy answered 403" in body
    assert origin.sni == []


def test_a_wrong_name_behind_the_parent_is_refused(moongate, parts):
    ca, plugin, made = parts
    origin = TLSOrigin(*ca.issue("origin", ["elsewhere.test"]))
    parent = Parent()
    made += [origin, parent]
    port, admin = free_port(), free_port()
    moongate(config(port, admin, parent.port, origin.port, plugin, ca.path), port)
    assert get(port)[0] == 502
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    assert 'moongate_upstream_tls_failures_total{cluster="secure"' in metrics


def test_the_origin_via_parent_config(moongate, parts, tmp_path):
    ca, _, made = parts
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(ca.path.read_bytes())
    origin = TLSOrigin(*ca.issue("origin", ["origin.example.test"]))
    parent = Parent()
    made += [origin, parent]
    port = free_port()
    text = (ROOT / "configs" / "origin_via_parent.yaml").read_text().replace("plugins_dir: ../plugins", f"plugins_dir: {PLUGINS}")
    text = re.sub(r"\b8081\b", str(port), text)
    text = re.sub(r"\b3130\b", str(parent.port), text)
    text = text.replace("origin.example.test:443", f"origin.example.test:{origin.port}")
    (tmp_path / "via.yaml").write_text(text)
    moongate(text, port)
    status, body = get(port)
    assert status == 200, body
    assert parent.targets == [f"origin.example.test:{origin.port}"] and origin.sni == ["origin.example.test"]
