"""The shipped configs, `moongate serve` with no flag, and graceful shutdown."""
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, PLUGINS, ROOT, Moongate, echo, free_port, recv_all, recv_exactly, recv_head, wait_port
from origin import Origin


def adapt(name, tmp_path, ports):
    """The shipped config with its ports replaced (old -> new) and plugins_dir made absolute."""
    text = (ROOT / "configs" / name).read_text()
    text = text.replace("plugins_dir: ../plugins", f"plugins_dir: {PLUGINS}")
    for old, new in ports.items():
        text = re.sub(rf"\b{old}\b", str(new), text)
    return text


def test_serve_with_no_flag_serves_the_default_config():
    proc = subprocess.Popen([BIN], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(3128)
        wait_port(9901)
        assert urllib.request.urlopen("http://127.0.0.1:9901/ready", timeout=5).read() == b"ready\n"
        s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        s.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
        assert recv_head(s)[0].startswith("HTTP/1.1 403")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_terminate_http1_connect_config(moongate, servers, tmp_path):
    upstream = servers(echo)
    port = free_port()
    moongate(adapt("terminate_http1_connect.yaml", tmp_path, {10001: port, 10443: upstream.port, 9902: free_port()}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\n\r\n".encode())
    assert recv_head(s)[0].startswith("HTTP/1.1 200")
    s.sendall(b"abc")
    assert recv_exactly(s, len(b"abc")) == b"abc"


def test_proxy_connect_config(moongate, servers, tmp_path):
    def parent(server, conn):
        head, _ = recv_head(conn)
        server.received.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        echo(server, conn)

    upstream = servers(parent)
    port = free_port()
    moongate(adapt("proxy_connect.yaml", tmp_path, {10000: port, 10002: upstream.port}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
    assert recv_head(s)[0].startswith("HTTP/1.1 200")
    s.sendall(b"hi")
    assert recv_exactly(s, len(b"hi")) == b"hi"
    assert upstream.received[0].startswith("CONNECT example.org:443 HTTP/1.1")


def test_reverse_proxy_config(moongate, tmp_path):
    api, web = Origin(), Origin()
    try:
        port = free_port()
        moongate(adapt("reverse_proxy.yaml", tmp_path, {8080: port, 9001: api.port, 9002: web.port, 9903: free_port()}), port)
        for host, path, hit in [("api.example.com", "/v1/users", api), ("www.example.com", "/", web),
                                ("api.example.com", "/other", web)]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
            with urllib.request.urlopen(req, timeout=5) as response:
                assert response.status == 200
                assert response.headers.get("Server") is None  # remove_response: [server]
            assert hit.requests[-1][1] == path
    finally:
        api.close()
        web.close()


def test_graceful_shutdown_lets_in_flight_requests_finish(tmp_path):
    def slow(conn):
        recv_head(conn)
        time.sleep(1.0)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        time.sleep(0.5)
        conn.close()

    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    import threading
    threading.Thread(target=lambda: slow(upstream.accept()[0]), daemon=True).start()
    port = free_port()
    from helpers import config, router
    mg = Moongate(tmp_path, config(port, [router([("*", "/", "slow")])], clusters={"slow": f"127.0.0.1:{upstream.getsockname()[1]}"}))
    wait_port(port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    mg.proc.send_signal(signal.SIGTERM)
    data = recv_all(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"done")
    assert mg.proc.wait(timeout=20) == 0
    mg.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    upstream.close()


def test_access_log_has_one_line_per_request(moongate, servers):
    upstream = servers(echo)
    port = free_port()
    from helpers import allowlist, config
    mg = moongate(config(port, [allowlist(f"127.0.0.1:{upstream.port}")]), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\n\r\nabc".encode())
    _, rest = recv_head(s)
    assert rest + recv_exactly(s, 3 - len(rest)) == b"abc"
    s.close()
    time.sleep(0.5)
    line = [l for l in mg.logs().splitlines() if "moongate.access" in l and "tunnel" in l][-1]
    for field in ["client=127.0.0.1:", "method=CONNECT", f"target=127.0.0.1:{upstream.port}", "decision=tunnel",
                  "plugin=connect_allowlist", "status=200", "bytes_in=3", "bytes_out=3", "duration_ms="]:
        assert field in line, (field, line)
