"""HTTP/1.1 forwarding end to end: routing to clusters, forward proxying, keep-alive pools,
streaming, sanitization and upstream faults (hardening.md §F)."""
import json
import socket
import subprocess
import time

import pytest

from conftest import free_port, recv_all, recv_head
from helpers import config, router
from origin import Origin


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def curl(*args, timeout=20):
    out = subprocess.run(["curl", "-s", "-S", *args], capture_output=True, text=True, timeout=timeout)
    return out


def reverse(moongate, origin, **kw):
    port = free_port()
    text = config(port, [router([("app.test", "/", "origin")]), "name: header_sanitizer"],
                  clusters={"origin": f"127.0.0.1:{origin.port}"}, **kw)
    mg = moongate(text, port)
    return port, mg


def test_routes_by_host_and_sanitizes(moongate, origin):
    port, _ = reverse(moongate, origin)
    out = curl("-H", "Host: app.test", "-H", "Connection: x-secret", "-H", "X-Secret: 1",
               "-H", "Proxy-Authorization: Basic eDp5", f"http://127.0.0.1:{port}/hello?x=1")
    seen = json.loads(out.stdout)
    assert seen["path"] == "/hello?x=1"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["host"] == "app.test"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["via"] == "1.1 moongate"
    assert "x-secret" not in headers and "proxy-authorization" not in headers


@pytest.mark.parametrize("plugins", ["router only", "with sanitize_response"])
def test_response_hop_by_hop_headers_never_reach_the_client(moongate, origin, plugins):
    port = free_port()
    chain = [router([("app.test", "/", "origin")])] + (["name: header_sanitizer"] if plugins != "router only" else [])
    moongate(config(port, chain, clusters={"origin": f"127.0.0.1:{origin.port}"}), port)
    out = curl("-D", "-", "-o", "/dev/null", "-o", "/dev/null", "-H", "Host: app.test",
               f"http://127.0.0.1:{port}/hop", f"http://127.0.0.1:{port}/hop")
    blocks = [b for b in out.stdout.replace("\r\n", "\n").split("\n\n") if b.strip()]
    assert len(blocks) == 2, out.stdout  # both answered on one keep-alive connection
    assert origin.connections == 1
    for block in blocks:
        names = [line.split(":", 1)[0].lower() for line in block.split("\n")[1:]]
        assert block.startswith("HTTP/1.1 200")
        assert "server" in names and "content-length" in names
        for hop in ("connection", "keep-alive", "x-origin-secret", "proxy-authenticate", "trailer"):
            assert hop not in names, (hop, block)


def test_no_route_is_404(moongate, origin):
    port, _ = reverse(moongate, origin)
    out = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: other.test", f"http://127.0.0.1:{port}/")
    assert out.stdout == "404"


def test_keep_alive_reuses_one_upstream_connection(moongate, origin):
    port, _ = reverse(moongate, origin)
    urls = [f"http://127.0.0.1:{port}/{i}" for i in range(5)]
    out = curl("-H", "Host: app.test", *urls)
    assert out.stdout.count('"method": "GET"') == 5
    assert origin.connections == 1


def test_pipelined_requests_are_answered_in_order(moongate, origin):
    port, _ = reverse(moongate, origin)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % i for i in range(3))
              + b"GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    data = recv_all(s, timeout=5).decode()
    assert [p for p in ["/p0", "/p1", "/p2", "/last"] if p in data] == ["/p0", "/p1", "/p2", "/last"]
    assert data.index("/p0") < data.index("/p1") < data.index("/p2") < data.index("/last")


def test_chunked_and_large_bodies_stream_both_ways(moongate, origin, tmp_path):
    port, _ = reverse(moongate, origin)
    big = tmp_path / "big.bin"
    big.write_bytes(b"y" * (3 * 1024 * 1024))
    out = curl("-H", "Host: app.test", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}",
               f"http://127.0.0.1:{port}/upload")
    assert json.loads(out.stdout)["body_length"] == 3 * 1024 * 1024
    out = curl("-H", "Host: app.test", "-o", str(tmp_path / "down"), "-w", "%{size_download}",
               f"http://127.0.0.1:{port}/big/{20 * 1024 * 1024}")
    assert out.stdout == str(20 * 1024 * 1024)


def test_forward_proxy_absolute_form(moongate, origin):
    port = free_port()
    text = config(port, [router(forward=True, forward_ports=(origin.port,), allow_addresses=(f"127.0.0.1:{origin.port}",))],
                  allowed_addresses=["127.0.0.1"])
    moongate(text, port)
    out = curl("-x", f"http://127.0.0.1:{port}", "-H", "Host: spoofed.test", f"http://127.0.0.1:{origin.port}/abs")
    seen = json.loads(out.stdout)
    assert seen["path"] == "/abs"
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["host"] == f"127.0.0.1:{origin.port}"  # the absolute-form authority wins


def test_forward_proxy_floor_refuses_names_resolving_to_loopback(moongate, origin):
    port = free_port()
    text = config(port, [router(forward=True, forward_ports=(origin.port,))])
    moongate(text, port)
    out = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}", f"http://localhost:{origin.port}/")
    assert out.stdout == "403"
    assert origin.connections == 0


def one_shot(handler):
    """An upstream that behaves badly once per connection."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    import threading

    def loop():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return sock


def reset_before_response(conn):
    recv_head(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


def garbage(conn):
    recv_head(conn)
    conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    time.sleep(0.5)
    conn.close()


def never_answers(conn):
    recv_head(conn)
    time.sleep(5)
    conn.close()


def ambiguous_framing(conn):
    # Content-Length and Transfer-Encoding together: a response-splitting shape, refused
    recv_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    time.sleep(0.5)
    conn.close()


def bare_cr_in_header(conn):
    recv_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello")
    time.sleep(0.5)
    conn.close()


def oversized_headers(conn):
    recv_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (70 * 1024) + b"\r\nContent-Length: 0\r\n\r\n")
    time.sleep(0.5)
    conn.close()


def mid_body_reset(conn):
    recv_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 1000)
    time.sleep(0.2)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


@pytest.mark.parametrize("behaviour,status", [
    (reset_before_response, "502"), (garbage, "502"), (ambiguous_framing, "502"), (bare_cr_in_header, "502"),
    (oversized_headers, "502"), (never_answers, "504")])
def test_upstream_faults(moongate, behaviour, status):
    upstream = one_shot(behaviour)
    port = free_port()
    text = config(port, [router([("*", "/", "bad")])], clusters={"bad": f"127.0.0.1:{upstream.getsockname()[1]}"},
                  timeouts={"upstream_response": "1s"})
    moongate(text, port)
    out = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/")
    assert out.stdout == status
    upstream.close()


def test_upstream_unreachable_is_503(moongate):
    port = free_port()
    moongate(config(port, [router([("*", "/", "gone")])], clusters={"gone": f"127.0.0.1:{free_port()}"}), port)
    out = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/")
    assert out.stdout == "503"


def test_upstream_reset_mid_body_is_a_truncated_closed_response(moongate):
    upstream = one_shot(mid_body_reset)
    port = free_port()
    moongate(config(port, [router([("*", "/", "bad")])], clusters={"bad": f"127.0.0.1:{upstream.getsockname()[1]}"}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    body = rest + recv_all(s, timeout=5)
    assert 0 < len(body) < 100000  # never a complete response, and the connection closed
    upstream.close()


def test_script_fault_is_500_and_counted(moongate, tmp_path, origin):
    (tmp_path / "broken.lua").write_text(
        "return { route = function(req) if req.path == '/boom' then error('boom') end return moongate.route('origin') end }")
    port, admin = free_port(), free_port()
    text = config(port, [f"name: broken\nfile: {tmp_path}/broken.lua"], clusters={"origin": f"127.0.0.1:{origin.port}"},
                  admin_port=admin)
    mg = moongate(text, port)
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/boom").stdout == "500"
    assert curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/fine").stdout == "200"
    metrics = curl(f"http://127.0.0.1:{admin}/metrics").stdout
    assert 'moongate_policy_faults_total{plugin="broken",hook="route",kind="runtime"} 1' in metrics
    assert 'moongate_requests_total{decision="fault",status="500",cluster="-"} 1' in metrics
    logs = mg.logs()
    assert "broken.lua:1: boom" in logs
    assert len(origin.requests) == 1  # nothing forwarded for the faulting request


def answers(raw):
    """An upstream that answers every request on a connection with `raw` (then closes if it says so)."""
    def handler(conn):
        while True:
            try:
                head, _ = recv_head(conn)
            except OSError:
                break
            if not head:
                break
            conn.sendall(raw)
            if b"Connection: close" in raw:
                break
        conn.close()
    return handler


def in_front_of(moongate, raw):
    """Moongate routing everything to an upstream that answers each request with `raw`."""
    upstream = one_shot(answers(raw))
    port = free_port()
    moongate(config(port, [router([("*", "/", "up")])], clusters={"up": f"127.0.0.1:{upstream.getsockname()[1]}"}), port)
    return port, upstream


@pytest.mark.parametrize("name,raw,body", [
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    ("close-delimited", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end"),
    ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfour", b"four"),
])
def test_response_bodies_are_reframed_for_a_reusable_client_connection(moongate, name, raw, body):
    port, upstream = in_front_of(moongate, raw)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    for _ in range(2):  # the same client connection answers twice: the framing was exact
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = recv_head(s)
        assert head.startswith("HTTP/1.1 200"), head
        fields = head.lower()
        if "content-length" in fields:
            assert "transfer-encoding" not in fields
            length = int(fields.split("content-length:")[1].split("\r\n")[0])
            while len(rest) < length:
                rest += s.recv(65536)
            assert rest == body
        else:
            assert "transfer-encoding: chunked" in fields
            while not rest.endswith(b"0\r\n\r\n"):
                rest += s.recv(65536)
            decoded, data = b"", rest
            while True:
                size_line, data = data.split(b"\r\n", 1)
                size = int(size_line, 16)
                if size == 0:
                    break
                decoded, data = decoded + data[:size], data[size + 2:]
            assert decoded == body
    s.close()
    upstream.close()


def test_head_and_204_responses_carry_no_body(moongate):
    port, upstream = in_front_of(moongate, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200") and "content-length: 100" in head.lower()
    assert "transfer-encoding" not in head.lower()
    s.sendall(b"HEAD /again HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing but the next head follows
    head2, _ = recv_head(s)
    assert rest == b"" and head2.startswith("HTTP/1.1 200")
    s.close()
    upstream.close()
    port, upstream = in_front_of(moongate, b"HTTP/1.1 204 No Content\r\n\r\n")
    out = curl("-D", "-", "-o", "/dev/null", "-H", "Host: x", f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/")
    assert out.stdout.count("HTTP/1.1 204") == 2 and "transfer-encoding" not in out.stdout.lower()


def test_framing_is_the_proxys_a_script_cannot_desynchronise_the_upstream(moongate, tmp_path, origin):
    # A script that edits Content-Length or Transfer-Encoding changes nothing about the framing
    # the upstream sees: the client's own length is sent, or chunked when the client chunked.
    (tmp_path / "meddler.lua").write_text(
        "return { route = function(req) return moongate.route('origin') end,\n"
        "  sanitize_request = function(req, edit) edit:set('content-length', '1'); edit:set('transfer-encoding', 'gzip') end }")
    port = free_port()
    moongate(config(port, [f"name: meddler\nfile: {tmp_path}/meddler.lua"], clusters={"origin": f"127.0.0.1:{origin.port}"}), port)
    out = curl("-X", "POST", "--data-binary", "hello", f"http://127.0.0.1:{port}/cl")
    seen = json.loads(out.stdout)
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["body_length"] == 5 and headers["content-length"] == "5" and "transfer-encoding" not in headers
    out = curl("-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunks", f"http://127.0.0.1:{port}/te")
    seen = json.loads(out.stdout)
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["body_length"] == 12 and headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert len(origin.requests) == 2


def test_an_http10_client_gets_an_unknown_length_body_until_close_never_chunked(moongate):
    port, upstream = in_front_of(moongate, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    assert "transfer-encoding" not in head.lower() and "content-length" not in head.lower()
    assert "connection: close" in head.lower()
    assert rest + recv_all(s, timeout=5) == b"hello"  # then the connection closed
    upstream.close()
