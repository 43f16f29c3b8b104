"""Hot reload of policy: every kind of change reaches the live policy; broken scripts never do;
in-flight requests finish under the generation that admitted them."""
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, recv_all, recv_head
from helpers import config


def plugin(version, broken=""):
    return (f"local M = {{}}\nfunction M.route(req) return moongate.respond(200, '{version}') end\n"
            f"{broken}\nreturn M\n")


def answer(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = recv_all(s, timeout=5).decode()
    return data.split("\r\n\r\n", 1)[1].strip() if "\r\n\r\n" in data else ""


def wait_for(port, expected, timeout=5.0):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = answer(port)
        if seen == expected:
            return time.time()
        time.sleep(0.02)
    raise AssertionError(f"expected {expected!r}, still {seen!r}")


def admin_get(port, path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read().decode()


def admin_post(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def live(moongate, tmp_path):
    """Moongate serving one plugin file, with admin; returns (port, admin, plugin path, process)."""
    path = tmp_path / "live.lua"
    path.write_text(plugin("v1"))
    port, admin = free_port(), free_port()
    mg = moongate(config(port, [f"name: live\nfile: {path}"], admin_port=admin), port)
    assert answer(port) == "v1"
    return port, admin, path, mg


def test_in_place_write_is_live_quickly(live):
    port, _, path, _ = live
    start = time.time()
    path.write_text(plugin("v2"))
    assert wait_for(port, "v2") - start < 2.0


def test_atomic_rename_is_picked_up(live, tmp_path):
    port, _, path, _ = live
    tmp = tmp_path / "live.lua.tmp"
    tmp.write_text(plugin("renamed"))
    os.rename(tmp, path)
    wait_for(port, "renamed")


def test_delete_and_recreate_is_picked_up(live):
    port, _, path, _ = live
    path.unlink()
    time.sleep(0.3)
    assert answer(port) == "v1"  # a missing file is a rejected reload: v1 keeps serving
    path.write_text(plugin("recreated"))
    wait_for(port, "recreated")


def test_symlink_swap_like_a_configmap(moongate, tmp_path):
    for version in ["v1", "v2"]:
        (tmp_path / version).mkdir()
        (tmp_path / version / "plugin.lua").write_text(plugin(f"configmap-{version}"))
    os.symlink("v1", tmp_path / "..data")
    os.symlink("..data/plugin.lua", tmp_path / "plugin.lua")
    port = free_port()
    moongate(config(port, [f"name: cm\nfile: {tmp_path}/plugin.lua"]), port)
    assert answer(port) == "configmap-v1"
    os.symlink("v2", tmp_path / "..data_tmp")
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic flip Kubernetes does
    wait_for(port, "configmap-v2")


def test_broken_scripts_are_rejected_and_the_running_generation_stays(live):
    port, admin, path, mg = live
    path.write_text(plugin("v2", broken="this is not lua"))
    time.sleep(0.6)
    assert answer(port) == "v1"
    policy = json.loads(admin_get(admin, "/policy"))
    assert policy["generation"] == 1
    last = policy["last_attempt"]
    assert last["result"] == "rejected"
    assert last["error"]["step"] == "compile"
    assert last["error"]["file"] == str(path)
    assert last["error"]["line"] == 3
    metrics = admin_get(admin, "/metrics")
    assert 'moongate_policy_reloads_total{result="rejected"}' in metrics
    assert "policy reload rejected" in mg.logs()
    path.write_text(plugin("v3"))
    wait_for(port, "v3")


def test_a_runtime_error_in_init_or_a_failing_test_is_rejected(live):
    port, admin, path, _ = live
    path.write_text(plugin("v2", broken="function M.init(c) error('bad config') end"))
    time.sleep(0.6)
    assert answer(port) == "v1"
    path.write_text(plugin("v2", broken="M.tests = { { name = 'says v1', request = 'GET / HTTP/1.1', headers = { host = 'x' }, expect = 'respond 201' } }"))
    time.sleep(0.6)
    assert answer(port) == "v1"
    last = json.loads(admin_get(admin, "/policy"))["last_attempt"]
    assert last["error"]["step"] == "test" and last["error"]["test"] == "says v1"
    # the failing case's own file and line (its table starts on line 3 of the plugin)
    assert last["error"]["file"] == str(path) and last["error"]["line"] == 3, last


def test_admin_reload_and_policy_endpoint(moongate, tmp_path):
    path = tmp_path / "live.lua"
    path.write_text(plugin("v1"))
    port, admin = free_port(), free_port()
    from conftest import BIN
    import subprocess
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config(port, [f"name: live\nfile: {path}"], admin_port=admin))
    proc = subprocess.Popen([BIN, "serve", "--config", str(cfg), "--no-watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from conftest import wait_port
        wait_port(port)
        path.write_text(plugin("v2"))
        time.sleep(0.5)
        assert answer(port) == "v1"  # not watching
        status, body = admin_post(admin, "/reload")
        assert status == 200 and body["result"] == "loaded" and body["generation"] == 2
        assert answer(port) == "v2"
        policy = json.loads(admin_get(admin, "/policy"))
        assert policy["generation"] == 2 and policy["reason"] == "admin"
        digests = {f["path"]: f["sha256"] for f in policy["files"]}
        import hashlib
        assert digests[str(path)] == hashlib.sha256(path.read_bytes()).hexdigest()
        path.write_text("return (")
        status, body = admin_post(admin, "/reload")
        assert status == 422 and body["result"] == "rejected" and body["error"]["line"] == 1
        path.write_text(plugin("v3"))
        proc.send_signal(signal.SIGHUP)
        wait_for(port, "v3")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_in_flight_requests_finish_under_the_generation_that_admitted_them(moongate, tmp_path):
    def slow_origin(sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            recv_head(conn)
            time.sleep(1.0)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            conn.close()

    origin = socket.socket()
    origin.bind(("127.0.0.1", 0))
    origin.listen(4)
    threading.Thread(target=slow_origin, args=(origin,), daemon=True).start()
    script = ("local M = {{}}\nfunction M.route(req) return moongate.route('slow') end\n"
              "function M.sanitize_response(req, res, edit) edit:set('x-generation', '{v}') end\nreturn M\n")
    path = tmp_path / "gen.lua"
    path.write_text(script.format(v="old"))
    port, admin = free_port(), free_port()
    moongate(config(port, [f"name: gen\nfile: {path}"], clusters={"slow": f"127.0.0.1:{origin.getsockname()[1]}"},
                    admin_port=admin), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)
    path.write_text(script.format(v="new"))
    deadline = time.time() + 5
    while json.loads(admin_get(admin, "/policy"))["generation"] != 2 and time.time() < deadline:
        time.sleep(0.05)
    head, _ = recv_head(s, timeout=10)
    assert head.startswith("HTTP/1.1 200")
    assert "x-generation: old" in head.lower()  # admitted by generation 1, answered under it
    s2 = socket.create_connection(("127.0.0.1", port), timeout=10)
    s2.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert "x-generation: new" in recv_head(s2, timeout=10)[0].lower()
    origin.close()


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_thousand_reloads_leave_memory_flat(live):
    port, admin, path, mg = live
    http = __import__("http.client").client
    conn = http.HTTPConnection("127.0.0.1", port, timeout=10)

    def cycle(n):
        for i in range(n):
            status, _ = admin_post(admin, "/reload")
            assert status == 200
            conn.request("GET", "/", headers={"Host": "x"})  # each loop builds the new generation's state
            response = conn.getresponse()
            assert response.read() == b"v1"

    cycle(100)  # warm-up: allocator pools, caches
    before = rss_kib(mg.proc.pid)
    cycle(1000)
    after = rss_kib(mg.proc.pid)
    assert json.loads(admin_get(admin, "/policy"))["generation"] == 1101
    print(f"RSS {before} KiB -> {after} KiB over 1,000 reloads")
    assert after - before < 8 * 1024, f"RSS grew from {before} KiB to {after} KiB over 1,000 reloads"
