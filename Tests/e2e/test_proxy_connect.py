"""CONNECT proxied to a parent proxy (tunnel_via), end to end (CX-PROXY-*, CX-XLATE-1)."""
import socket

from conftest import free_port, recv_all, recv_exactly, recv_head
from helpers import allowlist, config


def parent_proxy(answer, then_echo=True, extra_after_head=b""):
    """A parent proxy that reads a CONNECT head, records it, answers `answer`, then echoes."""

    def handle(server, conn):
        head, rest = recv_head(conn)
        server.received.append(head)
        if answer is None:
            return  # closes before answering
        conn.sendall(answer + extra_after_head)
        if then_echo:
            data = rest
            if data:
                conn.sendall(data)
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    return handle


def start(moongate, servers, handle):
    parent = servers(handle)
    port = free_port()
    moongate(config(port, [allowlist("127.0.0.1:4430", via="parent")], clusters={"parent": f"127.0.0.1:{parent.port}"}), port)
    return port, parent


def send_connect(port, target="example.org:443", extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n".encode() + extra)
    return s


def test_cx_proxy_1_xlate_1_connect_is_forwarded_as_connect_and_tunnels(moongate, servers):
    port, parent = start(moongate, servers, parent_proxy(b"HTTP/1.1 200 OK\r\n\r\n"))
    s = send_connect(port, extra=b"early")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    assert "content-length" not in head.lower()
    assert rest + recv_exactly(s, 5 - len(rest)) == b"early"
    s.sendall(b"more")
    assert recv_exactly(s, len(b"more")) == b"more"
    forwarded = parent.received[0]
    assert forwarded.startswith("CONNECT example.org:443 HTTP/1.1")
    assert "host: example.org:443" in forwarded.lower()
    assert "proxy-authorization" not in forwarded.lower()  # the floor


def test_cx_proxy_3_any_2xx_opens_the_tunnel(moongate, servers):
    port, _ = start(moongate, servers, parent_proxy(b"HTTP/1.1 202 Accepted\r\n\r\n"))
    s = send_connect(port)
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 202")
    s.sendall(b"x")
    assert recv_exactly(s, len(b"x")) == b"x"


def test_cx_xlate_1_length_headers_on_the_2xx_are_ignored(moongate, servers):
    port, _ = start(moongate, servers, parent_proxy(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", extra_after_head=b"tunnel-data"))
    s = send_connect(port)
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    assert "content-length" not in head.lower()
    assert rest + recv_exactly(s, len(b"tunnel-data") - len(rest)) == b"tunnel-data"


def test_cx_proxy_2_4_a_non_2xx_is_relayed_as_an_ordinary_response(moongate, servers):
    body = b"parent says no"
    port, _ = start(moongate, servers, parent_proxy(
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), then_echo=False))
    s = send_connect(port)
    data = recv_all(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 502")
    assert data.endswith(body)


def test_cx_proxy_5_parent_closing_before_answering_is_503(moongate, servers):
    port, _ = start(moongate, servers, parent_proxy(None))
    s = send_connect(port)
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 503"), head


def test_unreachable_parent_is_503(moongate):
    port = free_port()
    moongate(config(port, [allowlist("127.0.0.1:4430", via="parent")], clusters={"parent": f"127.0.0.1:{free_port()}"}), port)
    s = send_connect(port)
    assert recv_head(s)[0].startswith("HTTP/1.1 503")
