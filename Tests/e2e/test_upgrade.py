"""HTTP/1.1 upgrades (WebSocket) end to end, with the `websockets` library on both ends
(CX-DIS-3, CX-WS-1, CX-WS-2, CX-WS-3)."""
import socket
import threading

import pytest
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from conftest import free_port, recv_all, recv_head
from helpers import config

ROUTES = "name: host_router\nconfig:\n  upgrades: {upgrades}\n  routes:\n    - {{ host: \"*\", prefix: \"/\", cluster: ws }}"


@pytest.fixture
def ws_origin():
    def echo(ws):
        for message in ws:
            ws.send("echo: " + message)

    server = ws_serve(echo, "127.0.0.1", 0)
    port = server.socket.getsockname()[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()


def test_cx_ws_1_websocket_through_the_proxy(moongate, ws_origin):
    port = free_port()
    moongate(config(port, [ROUTES.format(upgrades='["websocket"]')], clusters={"ws": f"127.0.0.1:{ws_origin}"}), port)
    with ws_connect(f"ws://127.0.0.1:{port}/chat", open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo: hello"
        ws.send("again")
        assert ws.recv(timeout=5) == "echo: again"


def test_cx_dis_3_an_upgrade_policy_does_not_enable_is_403(moongate, ws_origin):
    port = free_port()
    moongate(config(port, [ROUTES.format(upgrades="[]")], clusters={"ws": f"127.0.0.1:{ws_origin}"}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 403")


def serve_once(handler):
    """A loopback listener whose first connection is handed to `handler` in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    threading.Thread(target=handler, args=(sock,), daemon=True).start()
    return sock


def start_routed_to(moongate, upstream):
    port = free_port()
    moongate(config(port, [ROUTES.format(upgrades='["websocket"]')], clusters={"ws": f"127.0.0.1:{upstream.getsockname()[1]}"}), port)
    return port


def test_cx_ws_2_a_non_101_answer_is_an_ordinary_response(moongate):
    def plain(server_sock):
        conn, _ = server_sock.accept()
        recv_head(conn)
        conn.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
        recv_all(conn, timeout=1)
        conn.close()

    upstream = serve_once(plain)
    port = start_routed_to(moongate, upstream)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    data = recv_all(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 426")
    assert data.endswith(b"nope")
    upstream.close()


def test_cx_ws_3_half_close_after_101(moongate):
    def origin(server_sock):
        conn, _ = server_sock.accept()
        recv_head(conn)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        got = recv_all(conn, timeout=5)
        conn.sendall(b"after FIN: " + got)
        conn.shutdown(socket.SHUT_WR)
        conn.close()

    upstream = serve_once(origin)
    port = start_routed_to(moongate, upstream)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 101")
    assert "upgrade: websocket" in head.lower()
    s.sendall(b"bytes")
    s.shutdown(socket.SHUT_WR)
    assert rest + recv_all(s, timeout=5) == b"after FIN: bytes"
    upstream.close()
