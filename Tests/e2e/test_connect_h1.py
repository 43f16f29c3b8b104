"""HTTP/1.1 CONNECT, end to end: the binary, real sockets, curl. Each test names the CX ids
(the CONNECT behaviours Moongate models on Envoy's) it checks."""
import socket
import subprocess
import time

from conftest import echo, free_port, recv_all, recv_exactly, recv_head
from helpers import allowlist, config


def connect(port, target, extra=b"", headers=b"", host=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    host = (host or target).encode()
    s.sendall(b"CONNECT " + target.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + headers + b"\r\n" + extra)
    return s


def start_with(moongate, servers, handler=echo, family=socket.AF_INET, host="127.0.0.1", **kw):
    """A target server running `handler`, and Moongate allowing CONNECT to exactly that target."""
    upstream = servers(handler, family=family, host=host)
    port = free_port()
    literal = f"[{host}]" if ":" in host else host
    mg = moongate(config(port, [allowlist(f"{literal}:{upstream.port}")], **kw), port)
    return mg, port, upstream


def test_cx_dis_1_connect_not_enabled_is_403_and_nothing_is_reached(moongate, servers):
    sentinel = servers(echo)
    port = free_port()
    moongate(config(port, ["name: header_sanitizer"]), port)
    s = connect(port, f"127.0.0.1:{sentinel.port}", extra=b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 403")
    assert recv_all(s, timeout=2) == b""  # closed, the pipelined request never answered
    time.sleep(0.3)
    assert sentinel.accepted == 0


def test_cx_dis_1_default_config_refuses_loopback_targets_without_connecting(moongate, servers, tmp_path):
    sentinel = servers(echo)
    port = free_port()
    moongate(config(port, [allowlist()]), port)
    for target in [f"127.0.0.1:{sentinel.port}", f"127.1:{sentinel.port}", f"[::ffff:127.0.0.1]:{sentinel.port}",
                   f"2130706433:{sentinel.port}", f"localhost:{sentinel.port}"]:
        s = connect(port, target)
        head, _ = recv_head(s)
        assert head.startswith("HTTP/1.1 403"), (target, head)
        s.close()
    assert sentinel.accepted == 0


def test_cx_term_1_2_h1_1_terminated_connect_gets_a_bare_200_then_bytes_both_ways(moongate, servers):
    _, port, upstream = start_with(moongate, servers)
    s = connect(port, f"127.0.0.1:{upstream.port}")
    head, rest = recv_head(s)
    assert head.split("\r\n")[0] == "HTTP/1.1 200 Connection established"
    lower = head.lower()
    assert "content-length" not in lower and "transfer-encoding" not in lower
    s.sendall(b"ping through the tunnel")
    assert recv_exactly(s, len(b"ping through the tunnel")) == b"ping through the tunnel"


def test_cx_ed_1_early_data_sent_with_the_head_is_forwarded(moongate, servers):
    _, port, upstream = start_with(moongate, servers)
    s = connect(port, f"127.0.0.1:{upstream.port}", extra=b"early bytes")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    assert rest + recv_exactly(s, len(b"early bytes") - len(rest)) == b"early bytes"


def test_cx_term_5_server_speaks_first(moongate, servers):
    def banner(server, conn):
        conn.sendall(b"220 hello from the server\r\n")
        recv_all(conn, timeout=2)

    _, port, upstream = start_with(moongate, servers, banner)
    s = connect(port, f"127.0.0.1:{upstream.port}")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    banner = b"220 hello from the server\r\n"
    assert rest + recv_exactly(s, len(banner) - len(rest)) == banner


def test_cx_hc_1_2_client_fin_half_closes_upstream_and_the_reverse_stays_open(moongate, servers):
    def reply_after_eof(server, conn):
        got = recv_all(conn, timeout=5)
        server.received.append(got)
        time.sleep(0.2)
        conn.sendall(b"answer after your FIN: " + got)
        conn.shutdown(socket.SHUT_WR)

    _, port, upstream = start_with(moongate, servers, reply_after_eof)
    s = connect(port, f"127.0.0.1:{upstream.port}")
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    s.sendall(b"question")
    s.shutdown(socket.SHUT_WR)
    assert recv_all(s, timeout=5) == b"answer after your FIN: question"


def test_cx_hc_3_upstream_fin_delivers_every_byte_first(moongate, servers):
    payload = bytes(range(256)) * 16384  # 4 MiB

    def download(server, conn):
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn, timeout=5)

    _, port, upstream = start_with(moongate, servers, download)
    s = connect(port, f"127.0.0.1:{upstream.port}")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    time.sleep(0.5)  # let the upstream finish and FIN while the client has not read yet
    data = rest + recv_all(s, timeout=10)
    assert len(data) == len(payload) and data == payload


def test_cx_hc_4_upstream_reset_closes_the_client(moongate, servers):
    def reset(server, conn):
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    _, port, upstream = start_with(moongate, servers, reset)
    s = connect(port, f"127.0.0.1:{upstream.port}")
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    s.sendall(b"trigger")
    start = time.time()
    try:
        assert recv_all(s, timeout=5) == b""
    except ConnectionResetError:
        pass
    assert time.time() - start < 4


def test_cx_fail_1_3_refused_target_is_503_never_200_and_the_next_tunnel_works(moongate, servers):
    refused = free_port()
    upstream = servers(echo)
    port = free_port()
    moongate(config(port, [allowlist(f"127.0.0.1:{refused}", f"127.0.0.1:{upstream.port}")]), port)
    s = connect(port, f"127.0.0.1:{refused}", extra=b"early data does not change it")
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 503"), head
    assert "200" not in head.split("\r\n")[0]
    s2 = connect(port, f"127.0.0.1:{upstream.port}")
    assert recv_head(s2)[0].startswith("HTTP/1.1 200")
    s2.sendall(b"x")
    assert recv_exactly(s2, len(b"x")) == b"x"


def test_cx_bad_1_to_5_malformed_connects(moongate, servers):
    _, port, upstream = start_with(moongate, servers)
    target = f"127.0.0.1:{upstream.port}".encode()
    cases = {
        b"CONNECT /path HTTP/1.1\r\nHost: x\r\n\r\n": "400",                                   # CX-BAD-1
        b"CONNECT http://" + target + b"/ HTTP/1.1\r\nHost: x\r\n\r\n": "400",                 # CX-BAD-2
        b"CONNECT 127.0.0.1 HTTP/1.1\r\nHost: x\r\n\r\n": "400",                               # CX-BAD-3
        b"CONNECT " + target + b" HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello": "400",          # CX-BAD-4
        b"CONNECT " + target + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": "400",  # CX-BAD-5
    }
    for raw, status in cases.items():
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(raw)
        head, _ = recv_head(s)
        assert head.split(" ")[1] == status, (raw, head)
        s.close()
    assert upstream.accepted == 0
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nContent-Length: 0\r\n\r\n")  # CX-BAD-4: 0 is tolerated
    assert recv_head(s)[0].startswith("HTTP/1.1 200")


def test_cx_h1_2_match_the_target_not_the_host_header(moongate, servers):
    sentinel = servers(echo)
    _, port, upstream = start_with(moongate, servers)
    s = connect(port, f"127.0.0.1:{sentinel.port}", host=f"127.0.0.1:{upstream.port}")
    assert recv_head(s)[0].startswith("HTTP/1.1 403")
    assert sentinel.accepted == 0


def test_cx_h1_3_ipv6_literal_target(moongate, servers):
    _, port, upstream = start_with(moongate, servers, family=socket.AF_INET6, host="::1")
    s = connect(port, f"[::1]:{upstream.port}")
    assert recv_head(s)[0].startswith("HTTP/1.1 200")
    s.sendall(b"v6")
    assert recv_exactly(s, len(b"v6")) == b"v6"


def test_cx_idle_1_2_idle_tunnels_close_and_traffic_keeps_them_open(moongate, servers):
    _, port, upstream = start_with(moongate, servers, timeouts={"tunnel_idle": "1s"})
    busy = connect(port, f"127.0.0.1:{upstream.port}")
    idle = connect(port, f"127.0.0.1:{upstream.port}")
    assert recv_head(busy)[0].startswith("HTTP/1.1 200")
    assert recv_head(idle)[0].startswith("HTTP/1.1 200")
    for _ in range(6):  # 1.8 s of traffic, every 0.3 s
        busy.sendall(b".")
        assert recv_exactly(busy, len(b".")) == b"."
        time.sleep(0.3)
    assert recv_all(idle, timeout=3) == b""  # closed by the idle timer
    busy.sendall(b"!")
    assert recv_exactly(busy, len(b"!")) == b"!"


def test_curl_through_a_terminated_tunnel(moongate, servers):
    def origin(server, conn):
        recv_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, tunnel")

    _, port, upstream = start_with(moongate, servers, origin)
    out = subprocess.run(["curl", "-s", "-p", "-x", f"http://127.0.0.1:{port}", f"http://127.0.0.1:{upstream.port}/"],
                         capture_output=True, text=True, timeout=20)
    assert out.stdout == "hello, tunnel"


def test_c12_tunnel_caps_per_client_and_global_refuse_cleanly_and_recover(moongate, servers):
    # hardening.md §C.12: many tunnels from one client cannot exhaust descriptors; a refusal is a
    # clean 503 that never reaches the target, and closing tunnels frees their places.
    _, port, upstream = start_with(moongate, servers, limits={"max_tunnels_per_client": 2})
    held = []
    for _ in range(2):
        s = connect(port, f"127.0.0.1:{upstream.port}")
        head, _ = recv_head(s)
        assert head.startswith("HTTP/1.1 200")
        held.append(s)
    # The 200 goes out when the proxy's connect completes; the target's accept thread may count it later.
    deadline = time.time() + 5
    while upstream.accepted < 2 and time.time() < deadline:
        time.sleep(0.05)
    accepted = upstream.accepted
    assert accepted == 2
    s = connect(port, f"127.0.0.1:{upstream.port}")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 503") and b"too many tunnels from this client" in rest + recv_all(s, timeout=2)
    time.sleep(0.3)
    assert upstream.accepted == accepted  # the refused tunnel never dialled
    held.pop().close()
    deadline = time.time() + 5  # the closed tunnel's place frees once both directions have ended
    while True:
        s = connect(port, f"127.0.0.1:{upstream.port}")
        head, _ = recv_head(s)
        if head.startswith("HTTP/1.1 200") or time.time() > deadline:
            break
        s.close()
        time.sleep(0.1)
    assert head.startswith("HTTP/1.1 200")  # recovered
    s.sendall(b"still works")
    assert recv_exactly(s, 11) == b"still works"
    # The global cap refuses the same way.
    _, port2, upstream2 = start_with(moongate, servers, limits={"max_tunnels": 1})
    first = connect(port2, f"127.0.0.1:{upstream2.port}")
    assert recv_head(first)[0].startswith("HTTP/1.1 200")
    second = connect(port2, f"127.0.0.1:{upstream2.port}")
    head, rest = recv_head(second)
    assert head.startswith("HTTP/1.1 503") and b"too many tunnels" in rest + recv_all(second, timeout=2)


LOG_HOOK = """
local M = {}
function M.connect(req) if req.target.host == "127.0.0.1" then return moongate.tunnel() end end
function M.log(req, res)
  moongate.log("info", "tunnel logged", { target = req.authority, status = res.status })
end
return M
"""


def test_a_log_hook_runs_when_a_tunnel_closes_and_the_access_log_has_its_line(moongate, servers, tmp_path):
    """The log hook sees the tunnel's request and its status once it closes (the tunnel keeps only
    what the hook and the access log need while it is open)."""
    upstream = servers(echo)
    plugin = tmp_path / "hooked.lua"
    plugin.write_text(LOG_HOOK)
    port = free_port()
    mg = moongate(config(port, [f"name: hooked\nfile: {plugin}"]), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\n\r\n".encode())
    head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 200")
    s.sendall(b"ping")
    assert recv_exactly(s, 4) == b"ping"
    s.close()
    deadline = time.time() + 5
    while "tunnel logged" not in mg.logs() and time.time() < deadline:
        time.sleep(0.05)
    lines = mg.logs().splitlines()
    hook = [line for line in lines if line.endswith("tunnel logged")]
    access = [line for line in lines if "moongate.access" in line and line.endswith(" tunnel")]
    target = f"target=127.0.0.1:{upstream.port}"
    assert len(hook) == 1 and "status=200" in hook[0] and target in hook[0] and "plugin=hooked" in hook[0], lines
    assert len(access) == 1, lines
    for field in ("bytes_in=4", "bytes_out=4", "decision=tunnel", "method=CONNECT", "plugin=hooked", "status=200", target):
        assert field in access[0], access[0]
