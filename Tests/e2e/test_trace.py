"""Decision traces: `moongate decide --trace`, `GET /trace` on the admin listener, and the access
log's attribution of every refusal (plugin, policy, floor, malformed, limit)."""
import http.client
import json
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, recv_all, recv_head, run_moongate, wait_port
from helpers import config, router
from origin import Origin

# A plugin ahead of host_router: /boom faults, /deny is a plugin's own refusal.
TESTER = """\
local M = {}
function M.route(req)
  if req.path == "/boom" then error("boom") end
  if req.path == "/deny" then return moongate.deny(451, "nope") end
end
return M
"""


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def write_config(tmp_path, port, origin_port, admin=None, limits=None, echo_port=None):
    (tmp_path / "tester.lua").write_text(TESTER)
    allow = f'\n  allow_addresses: ["127.0.0.1:{echo_port}"]' if echo_port else ""
    text = config(port, [
        f"name: tester\nfile: {tmp_path}/tester.lua\npriority: 1",
        "name: connect_allowlist\nconfig:\n  allow: [\"*\"]" + allow,
        router([("app.test", "/", "origin")], forward=True),
        "name: header_sanitizer",
    ], clusters={"origin": f"127.0.0.1:{origin_port}"}, admin_port=admin, limits=limits)
    path = tmp_path / "moongate.yaml"
    path.write_text(text)
    return text, path


def decide(path, *args):
    result = run_moongate("decide", "--config", str(path), "--trace", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- moongate decide --trace ------------------------------------------------------------------------

def test_decide_trace_of_a_forwarded_request_lists_each_hook_the_floor_and_the_upstream_head(tmp_path):
    _, path = write_config(tmp_path, free_port(), free_port())
    out = decide(path, "--request", "GET http://public.test/a?b=1 HTTP/1.1", "--header", "Host: other.test",
                 "--header", "Connection: x-secret", "--header", "X-Secret: 1", "--resolve", "public.test=93.184.216.34")
    assert "decision: forward" in out and "plugin:   host_router" in out
    # each hook, in order, with its answer and time
    calls = re.findall(r"^  \d+\. (\S+) -> (.+?)  \(\d+\.\d µs\)$", out, re.M)
    assert calls == [("tester.route", "nil"), ("host_router.route", "forward"), ("header_sanitizer.sanitize_request", "ok")]
    assert "composition: route: the first answer wins: forward from plugin host_router" in out
    assert "sanitization floor removed: connection, x-secret" in out
    assert "floor:    passed: public.test -> 93.184.216.34 (--resolve); dials 93.184.216.34" in out
    assert "result:   forwarded to public.test:80 at 93.184.216.34:80" in out
    # what goes upstream, as the proxy writes it: origin-form, the URI's authority as Host
    assert "upstream request: GET /a?b=1 HTTP/1.1\n" in out
    head = out.split("upstream headers:\n")[1].split("trace:")[0]
    assert head.splitlines()[0] == "  host: public.test" 
    assert "other.test" not in head and "x-secret" not in head.lower()


def test_decide_says_the_address_floor_refuses_what_the_proxy_refuses(tmp_path):
    _, path = write_config(tmp_path, free_port(), free_port())
    out = decide(path, "--request", "CONNECT localhost:443")
    assert "decision: tunnel" in out
    assert "floor:    refused: localhost -> " in out
    assert "result:   403 Forbidden: localhost resolves to a loopback address (address floor)" in out
    assert "composition: connect: no deny; the first tunnel wins: tunnel from plugin connect_allowlist" in out
    out = decide(path, "--request", "GET http://localhost/")
    assert "decision: forward" in out
    assert "result:   403 Forbidden: localhost resolves to a loopback address" in out
    # --resolve stands in for DNS both ways
    out = decide(path, "--request", "CONNECT example.test:443", "--resolve", "example.test=10.1.2.3")
    assert "result:   403 Forbidden: example.test resolves to a private address (address floor)" in out
    out = decide(path, "--request", "CONNECT example.test:443", "--resolve", "example.test=93.184.216.34")
    assert "result:   200 Connection established once 93.184.216.34:443 accepts, then a byte relay" in out


def test_decide_trace_of_a_faulting_plugin(tmp_path):
    _, path = write_config(tmp_path, free_port(), free_port())
    out = decide(path, "--request", "GET /boom", "--header", "Host: app.test")
    assert "decision: fault" in out and "plugin:   tester" in out
    assert re.search(r"^  1\. tester\.route -> fault runtime: .*tester\.lua:3: boom  \(\d+\.\d µs\)$", out, re.M), out
    assert "composition: route: fault in plugin tester fails the request closed: 500" in out
    assert "result:   500 Internal Server Error: policy error" in out
    assert "2. host_router" not in out


def test_decide_refuses_what_the_parser_refuses(tmp_path):
    _, path = write_config(tmp_path, free_port(), free_port())
    result = run_moongate("decide", "--config", str(path), "--request", "GET /x HTTP/1.1", "--header", "Host: a",
                          "--header", "Bad Name: x")
    assert result.returncode == 1
    assert "malformed request" in result.stderr and "(the proxy answers 400)" in result.stderr
    result = run_moongate("decide", "--config", str(path), "--request", "GET /" + "a" * 9000 + " HTTP/1.1",
                          "--header", "Host: a")
    assert result.returncode == 1 and "(the proxy answers 414)" in result.stderr


# -- GET /trace -------------------------------------------------------------------------------------

class TraceStream:
    """Reads /trace's JSON lines in a thread (the response is chunked; http.client decodes it)."""

    def __init__(self, admin, query):
        self.conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=40)
        self.conn.request("GET", "/trace?" + query)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("transfer-encoding") == "chunked"
        self.opening = json.loads(self.response.readline())
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for raw in self.response:
                if raw.strip():
                    self.lines.append(json.loads(raw))
        except (OSError, http.client.HTTPException, ValueError):
            pass

    def wait_for(self, count, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline and len([l for l in self.lines if "end" not in l]) < count:
            time.sleep(0.05)
        return [l for l in self.lines if "end" not in l]

    def finish(self, timeout=20):
        self.thread.join(timeout)
        return self.lines


def http_get(port, path, host="app.test"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = recv_all(s)
    s.close()
    return data


def connect(port, target):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head, _ = recv_head(s)
    s.close()
    return head


def test_trace_streams_a_forwarded_request_a_floor_refusal_and_a_fault(moongate, tmp_path, origin):
    port, admin = free_port(), free_port()
    text, _ = write_config(tmp_path, port, origin.port, admin=admin)
    moongate(text, port)
    wait_port(admin)
    stream = TraceStream(admin, "client=127.0.0.0/8&rate=100&seconds=10")
    assert stream.opening == {"tracing": {"filter": {"client": "127.0.0.0/8"}, "rate": 100, "seconds": 10}}
    assert http_get(port, "/hello").startswith(b"HTTP/1.1 200")
    assert connect(port, "localhost:443").startswith("HTTP/1.1 403")
    assert http_get(port, "/boom").startswith(b"HTTP/1.1 500")
    lines = stream.wait_for(3)
    assert len(lines) == 3, lines
    # each line is sent when its request ends (the order of lines from two event loops may differ)
    forwarded = next(l for l in lines if l.get("path") == "/hello")
    floor = next(l for l in lines if l["method"] == "CONNECT")
    fault = next(l for l in lines if l.get("path") == "/boom")

    assert forwarded["decision"] == "route origin" and forwarded["status"] == 200 and forwarded["cluster"] == "origin"
    assert forwarded["path"] == "/hello" and forwarded["reason"] is None
    assert [(c["plugin"], c["hook"], c["answer"]) for c in forwarded["calls"]] == [
        ("tester", "route", "nil"), ("host_router", "route", "route origin"), ("header_sanitizer", "sanitize_request", "ok")]
    assert all(c["us"] >= 0 for c in forwarded["calls"])
    assert "set x-forwarded-for: 127.0.0.1" in forwarded["edits"]
    assert forwarded["composition"] == ["route: the first answer wins: route origin from plugin host_router; later hooks not called"]
    assert forwarded["floor"].startswith("not applied")
    assert forwarded["bytes_out"] > 0

    assert floor["method"] == "CONNECT" and floor["target"] == "localhost:443"
    assert floor["decision"] == "tunnel" and floor["plugin"] == "connect_allowlist"
    assert floor["status"] == 403 and floor["reason"] == "floor"
    assert floor["floor"] == "refused: localhost resolves to a loopback address (403)"

    assert fault["decision"] == "fault" and fault["status"] == 500 and fault["reason"] == "plugin"
    assert fault["fault"]["plugin"] == "tester" and fault["fault"]["kind"] == "runtime"
    assert "boom" in fault["fault"]["message"]
    assert [c["plugin"] for c in fault["calls"]] == ["tester"]

    end = stream.finish()[-1]
    assert end == {"end": {"sent": 3, "dropped": 0}}


def test_trace_filters_by_decision_path_and_client_and_bounds_the_rate(moongate, tmp_path, origin):
    port, admin = free_port(), free_port()
    text, _ = write_config(tmp_path, port, origin.port, admin=admin)
    moongate(text, port)
    wait_port(admin)
    floors = TraceStream(admin, "decision=floor&seconds=4")
    boom = TraceStream(admin, "path=/boom&seconds=4")
    elsewhere = TraceStream(admin, "client=192.0.2.0/24&seconds=4")
    slow = TraceStream(admin, "host=app.test&rate=1&seconds=4")
    for _ in range(3):
        http_get(port, "/hello")
    connect(port, "localhost:443")
    http_get(port, "/boom")
    floor_lines = [l for l in floors.finish() if "end" not in l]
    assert [(l["target"], l["reason"]) for l in floor_lines] == [("localhost:443", "floor")]
    assert [l["path"] for l in boom.finish() if "end" not in l] == ["/boom"]
    assert elsewhere.finish() == [{"end": {"sent": 0, "dropped": 0}}]
    slow_lines = slow.finish()
    assert slow_lines[-1]["end"]["sent"] == 1 and slow_lines[-1]["end"]["dropped"] == 3  # 4 app.test requests, 1 a second


def test_trace_refuses_a_bad_filter(moongate, tmp_path, origin):
    port, admin = free_port(), free_port()
    text, _ = write_config(tmp_path, port, origin.port, admin=admin)
    moongate(text, port)
    wait_port(admin)
    for query, message in [("rate=500", "rate"), ("seconds=0", "seconds"), ("client=nowhere", "client"), ("colour=red", "unknown")]:
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        conn.request("GET", "/trace?" + query)
        response = conn.getresponse()
        assert response.status == 400, query
        assert message in response.read().decode()
        conn.close()


def test_trace_ends_when_the_listener_hangs_up_and_tracing_stops(moongate, tmp_path, origin):
    port, admin = free_port(), free_port()
    text, _ = write_config(tmp_path, port, origin.port, admin=admin)
    moongate(text, port)
    wait_port(admin)
    s = socket.create_connection(("127.0.0.1", admin), timeout=5)
    s.sendall(b"GET /trace?seconds=60 HTTP/1.1\r\nHost: admin\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200") and "transfer-encoding: chunked" in head.lower()
    s.close()
    time.sleep(0.3)
    assert http_get(port, "/hello").startswith(b"HTTP/1.1 200")
    # a new listener sees only its own requests' lines, and the proxy still answers
    again = TraceStream(admin, "seconds=2")
    assert http_get(port, "/hello").startswith(b"HTTP/1.1 200")
    lines = again.finish()
    assert [l.get("path") for l in lines if "end" not in l] == ["/hello"]


# -- the access log: every refusal attributed ---------------------------------------------------------

def access_lines(logs):
    return [line for line in logs.splitlines() if "moongate.access" in line]


def field(line, name):
    m = re.search(rf"\b{name}=(\S+)", line)
    return m.group(1) if m else None


def test_access_log_attributes_each_refusal(moongate, tmp_path, origin, servers):
    def echo(server, conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)
    target = servers(echo)
    port = free_port()
    text, _ = write_config(tmp_path, port, origin.port, limits={"max_tunnels_per_client": 1}, echo_port=target.port)
    mg = moongate(text, port)

    assert http_get(port, "/deny").startswith(b"HTTP/1.1 451")                         # plugin
    assert connect(port, "example.test:25").startswith("HTTP/1.1 403")                # policy's default
    assert connect(port, "localhost:443").startswith("HTTP/1.1 403")                  # address floor (tunnel)
    assert http_get(port, "http://localhost/", host="localhost").startswith(b"HTTP/1.1 403")  # address floor (forward)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)                       # malformed
    s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n")
    assert recv_all(s).startswith(b"HTTP/1.1 400")
    s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /x HTTP/3.0\r\nHost: a\r\n\r\n")
    assert recv_all(s).startswith(b"HTTP/1.1 505")
    s.close()
    held = socket.create_connection(("127.0.0.1", port), timeout=5)                    # limit
    held.sendall(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert recv_head(held)[0].startswith("HTTP/1.1 200")
    assert connect(port, f"127.0.0.1:{target.port}").startswith("HTTP/1.1 503")
    held.close()
    assert http_get(port, "/ok").startswith(b"HTTP/1.1 200")

    deadline = time.time() + 5
    while time.time() < deadline and len(access_lines(mg.logs())) < 10:
        time.sleep(0.1)
    lines = access_lines(mg.logs())
    by = lambda pred: [l for l in lines if pred(l)]
    deny = by(lambda l: field(l, "path") == "/deny")[0]
    assert field(deny, "reason") == "plugin" and field(deny, "plugin") == "tester" and field(deny, "status") == "451"
    assert field(deny, "bytes_out") == str(len("nope\n"))  # the body as sent, line end included
    default = by(lambda l: "target=example.test:25" in l)[0]
    assert field(default, "reason") == "policy" and field(default, "plugin") == "-"
    floors = by(lambda l: field(l, "reason") == "floor")
    assert len(floors) == 2
    assert all(field(l, "status") == "403" for l in floors)
    assert {field(l, "method") for l in floors} == {"CONNECT", "GET"}
    malformed = by(lambda l: field(l, "reason") == "malformed")
    assert sorted(field(l, "status") for l in malformed) == ["400", "505"]
    limit = by(lambda l: field(l, "reason") == "limit")
    assert len(limit) == 1 and field(limit[0], "status") == "503"
    ok = by(lambda l: field(l, "path") == "/ok")[0]
    assert field(ok, "reason") == "-" and field(ok, "cluster") == "origin"
