"""`/metrics` before and after traffic: requests by decision, status and cluster; bytes each way
for forwarded requests and tunnels; refusals by reason; hook latency histograms per plugin and hook."""
import re
import socket
import subprocess
import time

import pytest

from conftest import free_port, recv_all, recv_exactly, recv_head, wait_port
from helpers import config, router
from origin import Origin


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def scrape(admin):
    text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{admin}/metrics"], capture_output=True, text=True, timeout=10).stdout
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def delta(before, after, series):
    return after.get(series, 0) - before.get(series, 0)


@pytest.fixture
def proxy(moongate, origin, servers):
    def echo(server, conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
    target = servers(echo)
    port, admin = free_port(), free_port()
    text = config(port, [
        f'name: connect_allowlist\nconfig:\n  allow: ["*"]\n  allow_addresses: ["127.0.0.1:{target.port}"]',
        router([("app.test", "/", "origin")], forward=True),
        "name: header_sanitizer",
    ], clusters={"origin": f"127.0.0.1:{origin.port}"}, admin_port=admin, limits={"max_tunnels_per_client": 1})
    moongate(text, port)
    wait_port(admin)
    return port, admin, target


def post(port, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    head, rest = recv_head(s)
    rest += recv_all(s)
    s.close()
    return head, rest


def test_requests_and_bytes_of_forwarded_requests_and_tunnels(proxy):
    port, admin, target = proxy
    before = scrape(admin)
    bodies = 0
    for size in (1000, 2345):
        head, body = post(port, b"u" * size)
        assert head.startswith("HTTP/1.1 200")
        bodies += len(body)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert recv_head(s)[0].startswith("HTTP/1.1 200")
    s.sendall(b"t" * 5000)
    assert recv_exactly(s, 5000) == b"t" * 5000
    s.close()
    time.sleep(0.5)  # the tunnel is counted when it closes
    after = scrape(admin)

    assert delta(before, after, 'moongate_requests_total{decision="route",status="200",cluster="origin"}') == 2
    assert delta(before, after, 'moongate_requests_total{decision="tunnel",status="200",cluster="-"}') == 1
    assert delta(before, after, 'moongate_bytes_relayed_total{direction="upstream",kind="forward"}') == 1000 + 2345
    assert delta(before, after, 'moongate_bytes_relayed_total{direction="downstream",kind="forward"}') == bodies
    assert delta(before, after, 'moongate_bytes_relayed_total{direction="upstream",kind="tunnel"}') == 5000
    assert delta(before, after, 'moongate_bytes_relayed_total{direction="downstream",kind="tunnel"}') == 5000


def test_refusals_by_reason(proxy):
    port, admin, target = proxy
    before = scrape(admin)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n")
    assert recv_all(s).startswith(b"HTTP/1.1 400")
    s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert recv_all(s).startswith(b"HTTP/1.1 414")
    s.close()
    for target_line in ("localhost:443", "example.test:25"):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f"CONNECT {target_line} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert recv_head(s)[0].startswith("HTTP/1.1 403")
        s.close()
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.sendall(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert recv_head(held)[0].startswith("HTTP/1.1 200")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert recv_head(s)[0].startswith("HTTP/1.1 503")
    s.close()
    held.close()
    time.sleep(0.3)
    after = scrape(admin)
    assert delta(before, after, 'moongate_refusals_total{reason="malformed"}') == 2
    assert delta(before, after, 'moongate_refusals_total{reason="floor"}') == 1
    assert delta(before, after, 'moongate_refusals_total{reason="policy"}') == 1
    assert delta(before, after, 'moongate_refusals_total{reason="limit"}') == 1
    assert delta(before, after, 'moongate_requests_total{decision="none",status="400",cluster="-"}') == 1
    assert delta(before, after, 'moongate_requests_total{decision="none",status="414",cluster="-"}') == 1
    assert delta(before, after, 'moongate_requests_total{decision="tunnel",status="403",cluster="-"}') == 1


def test_hook_latency_histograms_per_plugin_and_hook(proxy):
    port, admin, _ = proxy
    before = scrape(admin)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /h HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 200")
        s.close()
    after = scrape(admin)
    labels = 'plugin="host_router",hook="route"'
    assert delta(before, after, f"moongate_hook_duration_seconds_count{{{labels}}}") == 5
    assert delta(before, after, f'moongate_hook_duration_seconds_count{{plugin="header_sanitizer",hook="sanitize_request"}}') == 5
    assert after[f"moongate_hook_duration_seconds_sum{{{labels}}}"] > before.get(f"moongate_hook_duration_seconds_sum{{{labels}}}", 0)
    buckets = sorted(
        ((float("inf") if m.group(1) == "+Inf" else float(m.group(1))), v)
        for k, v in after.items() if (m := re.match(rf'moongate_hook_duration_seconds_bucket\{{{labels},le="([^"]+)"\}}', k)))
    assert len(buckets) == 14
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == after[f"moongate_hook_duration_seconds_count{{{labels}}}"]
    # plugin tests run while a generation loads are not counted: only requests are
    assert after.get('moongate_hook_duration_seconds_count{plugin="connect_allowlist",hook="connect"}', 0) == 0
