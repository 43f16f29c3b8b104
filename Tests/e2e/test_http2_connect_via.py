"""An HTTP/2 client's CONNECT sent on to an HTTP/1.1 parent proxy (`moongate.tunnel_via`):
CX-XLATE-1 (the request line and Host, the 2xx's framing fields ignored), CX-XLATE-3 (the stream
relays after the parent's 2xx), CX-XLATE-4 (several at once), CX-PROXY-2 (a refusal is relayed as
a response)."""
import socket
import time

import pytest

from conftest import free_port, recv_head
from test_http2_limits import Client

VIA = """
local M = {}
function M.connect(req) return moongate.tunnel_via("parent") end
return M
"""


def start(moongate, tmp_path, parent_port):
    plugin = tmp_path / "via.lua"
    plugin.write_text(VIA)
    port = free_port()
    moongate(f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http2]
clusters:
  - name: parent
    endpoints: ["127.0.0.1:{parent_port}"]
policy:
  watch: false
  plugins:
    - name: via
      file: {plugin}
""", port)
    return port


def parent_proxy(heads, status=b"200 Connection established", extra=b"Content-Length: 10\r\n"):
    def serve(server, conn):
        head, early = recv_head(conn)
        heads.append(head)
        conn.sendall(b"HTTP/1.1 " + status + b"\r\n" + extra + b"\r\n")
        if not status.startswith(b"2"):
            conn.sendall(b"denied")
            time.sleep(0.5)
            return
        data = early
        while True:
            if data:
                conn.sendall(b"parent: " + data)
            data = conn.recv(65536)
            if not data:
                conn.sendall(b" bye")
                conn.shutdown(socket.SHUT_WR)
                return
    return serve


def test_cx_xlate_1_3_and_4_h2_connect_streams_through_an_http1_parent(moongate, tmp_path, servers):
    heads = []
    parent = servers(parent_proxy(heads))
    port = start(moongate, tmp_path, parent.port)
    client = Client(port)
    try:
        streams = [client.connect(f"site{i}.example:443") for i in range(3)]
        client.pump(lambda: all(sid in client.status for sid in streams))
        for sid in streams:
            assert client.status[sid] == 200
            assert "content-length" not in client.headers[sid]  # the parent's Content-Length is ignored
        for i, sid in enumerate(streams):
            client.send(sid, f"hello {i}".encode(), end_stream=True)
        client.pump(lambda: all(sid in client.ended for sid in streams))
        for i, sid in enumerate(streams):
            assert client.data[sid] == f"parent: hello {i} bye".encode()
    finally:
        client.close()
    assert sorted(h.split("\r\n")[0] for h in heads) == [f"CONNECT site{i}.example:443 HTTP/1.1" for i in range(3)]
    for head in heads:
        target = head.split("\r\n")[0].split()[1]
        assert f"host: {target}" in head.lower()


def test_cx_proxy_2_a_parents_refusal_is_relayed_as_a_response(moongate, tmp_path, servers):
    heads = []
    parent = servers(parent_proxy(heads, status=b"407 Proxy Authentication Required",
                                  extra=b"Proxy-Authenticate: Basic\r\nContent-Length: 6\r\n"))
    port = start(moongate, tmp_path, parent.port)
    client = Client(port)
    try:
        sid = client.connect("site.example:443")
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 407 and client.data[sid] == b"denied"
        after = client.connect("other.example:443")  # the connection is still usable
        client.pump(lambda: after in client.status)
    finally:
        client.close()
