"""The overload guard end to end: past a threshold of open connections, buffered bytes or resident
memory, new requests get 503 with Retry-After and idle keep-alive connections are shed; back under,
requests are served again. Each crossing is logged and shown in the metrics and in /ready."""
import http.client
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, recv_all, recv_head, wait_port
from helpers import config, router
from origin import Origin


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def admin_get(admin, path, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def metric(admin, series):
    for line in admin_get(admin, "/metrics")[1].splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(predicate, timeout=10.0, what="condition", logs=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"; the log:\n{logs.logs()}" if logs else ""))


def request(port, path="/", timeout=10):
    """One request on a new connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "app.test"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def start(moongate, upstream_port, overload, name="moongate", h2=False):
    port, admin = free_port(), free_port()
    section = "".join(f"\n  {k}: {v}" for k, v in overload.items())
    text = config(port, [router([("app.test", "/", "origin")])], clusters={"origin": f"127.0.0.1:{upstream_port}"},
                  admin_port=admin, policy={"watch": "false"}, top={"event_loop_threads": 2, "overload": section})
    if h2:
        text = text.replace(f"    port: {port}\n", f"    port: {port}\n    protocols: [http1, http2]\n", 1)
    mg = moongate(text, port, name=name)
    wait_port(admin)
    return mg, port, admin


def test_past_the_connection_threshold_requests_get_503_and_idle_connections_are_shed(moongate, servers):
    release = threading.Event()

    def held(server, conn):
        # Answers each request once released: requests in flight hold their client connections open.
        while True:
            head, _ = recv_head(conn, timeout=15)
            if not head:
                return
            release.wait(20)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    upstream = servers(held)
    mg, port, admin = start(moongate, upstream.port, {"max_connections": 5, "check_interval": "50ms", "retry_after": 2}, h2=True)
    assert metric(admin, 'moongate_overload_active{resource="connections"}') == 0
    # The start-up probe's connection is gone before the test's own connections open.
    wait_for(lambda: metric(admin, 'moongate_overload_value{resource="connections"}') == 0, what="no connections")
    clients = []
    try:
        for _ in range(5):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"GET /held HTTP/1.1\r\nHost: app.test\r\n\r\n")
            clients.append(c)
        wait_for(lambda: upstream.accepted == 5, what="five requests in flight", logs=mg)
        assert metric(admin, 'moongate_overload_active{resource="connections"}') == 0
        assert admin_get(admin, "/ready")[0] == 200

        # The sixth connection: 503 with Retry-After, and the connection is closed.
        sixth = socket.create_connection(("127.0.0.1", port))
        sixth.sendall(b"GET /sixth HTTP/1.1\r\nHost: app.test\r\n\r\n")
        answer = recv_all(sixth).decode("latin-1")
        sixth.close()
        assert answer.startswith("HTTP/1.1 503"), answer
        assert "\r\nretry-after: 2\r\n" in answer.lower()
        assert upstream.accepted == 5  # nothing was forwarded
        assert metric(admin, 'moongate_overload_active{resource="connections"}') == 1
        assert metric(admin, "moongate_overload_refused_total") == 1
        assert admin_get(admin, "/ready") == (503, "overloaded: connections\n")

        # The held requests complete; their connections, idle now, are shed (closed by the proxy).
        release.set()
        for c in clients:
            head, body = recv_head(c)
            assert head.startswith("HTTP/1.1 200") and body == b"ok", head
        for c in clients:
            c.settimeout(5)
            assert c.recv(1) == b""  # closed by the proxy, not by us
        wait_for(lambda: admin_get(admin, "/ready")[0] == 200, what="recovery")
        assert request(port, "/after")[0] == 200
        assert metric(admin, 'moongate_overload_active{resource="connections"}') == 0
        assert metric(admin, "moongate_overload_shed_total") == 5
        logs = mg.logs()
        assert logs.count("overloaded: refusing new requests") == 1 and "resource=connections" in logs
        assert logs.count("overload over: serving requests again") == 1
    finally:
        release.set()
        for c in clients:
            c.close()


def test_past_the_memory_threshold_requests_get_503_until_a_reload_raises_it(moongate, origin):
    mg, port, admin = start(moongate, origin.port, {"max_memory": "1MiB", "check_interval": "50ms"}, h2=True)
    wait_for(lambda: admin_get(admin, "/ready")[0] == 503, what="memory overload")
    status, headers, _ = request(port, "/refused")
    assert status == 503 and headers["retry-after"] == "5"
    # An HTTP/2 request is refused the same way (its stream ends; the connection stays).
    out = subprocess.run(["curl", "-s", "-i", "--http2-prior-knowledge", "-H", "Host: app.test",
                          f"http://127.0.0.1:{port}/refused-h2"], capture_output=True, text=True, timeout=10).stdout
    assert out.startswith("HTTP/2 503") and "retry-after: 5" in out.lower(), out
    assert admin_get(admin, "/ready") == (503, "overloaded: memory\n")
    assert metric(admin, 'moongate_overload_active{resource="memory"}') == 1
    # The value the guard compares is the process's resident memory.
    with open(f"/proc/{mg.proc.pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * 4096
    seen = metric(admin, 'moongate_overload_value{resource="memory"}')
    assert 0.5 * rss < seen < 2 * rss, (seen, rss)
    assert origin.requests == []

    # A reload takes new thresholds (with the policy): memory is far under 4 GiB, so the guard recovers.
    mg.config.write_text(mg.config.read_text().replace("max_memory: 1MiB", "max_memory: 4GiB"))
    assert admin_get(admin, "/reload", method="POST")[0] == 200
    wait_for(lambda: admin_get(admin, "/ready")[0] == 200, what="recovery")
    assert request(port, "/served")[0] == 200
    assert metric(admin, 'moongate_overload_active{resource="memory"}') == 0
    assert metric(admin, "moongate_overload_refused_total") == 2
    assert "overload over: serving requests again" in mg.logs()


def test_past_the_buffered_bytes_threshold_requests_get_503_until_the_slow_reader_goes(moongate, origin):
    mg, port, admin = start(moongate, origin.port, {"max_buffered_bytes": "32KiB", "check_interval": "50ms"})
    assert request(port, "/before")[0] == 200
    # A slow reader: a 64 MiB download it does not read; the proxy's write buffer to it fills.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    try:
        slow.sendall(b"GET /big/67108864 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        wait_for(lambda: admin_get(admin, "/ready")[0] == 503, what="buffered-bytes overload")
        assert admin_get(admin, "/ready") == (503, "overloaded: buffered_bytes\n")
        assert metric(admin, 'moongate_overload_value{resource="buffered_bytes"}') > 32 * 1024
        status, headers, _ = request(port, "/refused")
        assert status == 503 and headers["retry-after"] == "5"
    finally:
        slow.close()
    wait_for(lambda: admin_get(admin, "/ready")[0] == 200, what="recovery")
    assert request(port, "/after")[0] == 200
    assert metric(admin, 'moongate_overload_active{resource="buffered_bytes"}') == 0
    assert [path for _, path, _, _ in origin.requests if path == "/refused"] == []
