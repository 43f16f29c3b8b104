"""Name resolution end to end: every address of a name is tried (Happy Eyeballs), each one
checked by the address floor, names pinned by `resolver.hosts`, and lookups that do not queue
behind each other."""
import json
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port
from helpers import config, router
from origin import Origin


@pytest.fixture
def origin():
    o = Origin()  # listens on 127.0.0.1 only
    yield o
    o.close()


class Sentinel:
    """A listener that must never be dialled: counts the connections it accepts."""

    def __init__(self, host, port, family=socket.AF_INET):
        self.sock = socket.socket(family)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.accepted = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


def curl(*args, timeout=20):
    return subprocess.run(["curl", "-s", "-S", *args], capture_output=True, text=True, timeout=timeout)


def resolver_section(hosts=None, **keys):
    text = "".join(f"\n  {k}: {v}" for k, v in keys.items())
    if hosts:
        text += "\n  hosts:" + "".join(f"\n    {name}: {json.dumps(addresses)}" for name, addresses in hosts.items())
    return text


def forward_proxy(moongate, origin, hosts, allowed, ports=(), **resolver):
    port = free_port()
    text = config(port, [router(forward=True, forward_ports=(origin.port, *ports))], allowed_addresses=allowed,
                  top={"resolver": resolver_section(hosts, **resolver)})
    return port, moongate(text, port)


@pytest.mark.parametrize("first", ["127.0.0.2", "::1"])
def test_a_name_falls_back_to_its_next_address_when_the_first_refuses(moongate, origin, first):
    # Nothing listens on the first address (the origin is on 127.0.0.1 only): a dialler that tries
    # one address answers 503; Happy Eyeballs goes on to the second.
    port, _ = forward_proxy(moongate, origin, {"dual.test": [first, "127.0.0.1"]}, [first, "127.0.0.1"])
    out = curl("-x", f"http://127.0.0.1:{port}", f"http://dual.test:{origin.port}/fallback")
    assert json.loads(out.stdout)["path"] == "/fallback"
    assert origin.connections == 1


def test_a_cluster_endpoint_name_is_tried_on_every_address(moongate, origin):
    port = free_port()
    text = config(port, [router([("app.test", "/", "origin")])], clusters={"origin": f"pair.test:{origin.port}"},
                  top={"resolver": resolver_section({"pair.test": ["::1", "127.0.0.2", "127.0.0.1"]})})
    moongate(text, port)
    out = curl("-H", "Host: app.test", f"http://127.0.0.1:{port}/cluster")
    assert json.loads(out.stdout)["path"] == "/cluster"


def test_the_floor_applies_to_each_address_and_refused_ones_are_never_dialled(moongate, origin):
    sentinel = Sentinel("127.0.0.2", origin.port)
    try:
        hosts = {"mixed.test": ["127.0.0.2", "127.0.0.1"], "internal.test": ["10.1.2.3", "127.0.0.2"]}
        port, _ = forward_proxy(moongate, origin, hosts, ["127.0.0.1"])
        # 127.0.0.2 comes first but is not allowed: only 127.0.0.1 is dialled.
        out = curl("-x", f"http://127.0.0.1:{port}", f"http://mixed.test:{origin.port}/mixed")
        assert json.loads(out.stdout)["path"] == "/mixed"
        # No address passes: 403 naming the class of the last address refused, and nothing dialled.
        out = curl("-i", "-x", f"http://127.0.0.1:{port}", f"http://internal.test:{origin.port}/")
        assert out.stdout.startswith("HTTP/1.1 403")
        assert "internal.test resolves to a loopback address" in out.stdout
        # The same answer as before for a system name resolving only to loopback.
        out = curl("-i", "-x", f"http://127.0.0.1:{port}", f"http://localhost:{origin.port}/")
        assert out.stdout.startswith("HTTP/1.1 200")  # 127.0.0.1 is allowed here
        assert sentinel.accepted == 0
        assert origin.connections == 2
    finally:
        sentinel.close()


def test_a_name_whose_every_address_refuses_gets_503(moongate, origin):
    closed = free_port()
    port, _ = forward_proxy(moongate, origin, {"down.test": ["::1", "127.0.0.1"]}, ["::1", "127.0.0.1"],
                            ports=(closed,))
    out = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}", f"http://down.test:{closed}/")
    assert out.stdout == "503"


def test_slow_lookups_do_not_hold_up_a_fast_one(moongate, origin, monkeypatch):
    # Names ending in .slow.test take 3 s to look up (a test-only delay on the lookup thread).
    monkeypatch.setenv("MOONGATE_TEST_LOOKUP_DELAY", "slow.test=3000")
    port, _ = forward_proxy(moongate, origin, None, ["127.0.0.1"], threads=8)
    names = [f"n{i}.slow.test" for i in range(6)] + ["same.slow.test"] * 10
    results = []

    def fetch(name):
        out = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}",
                   f"http://{name}:{origin.port}/")
        results.append(out.stdout)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in names]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.5)  # the slow lookups are all under way
    fast_started = time.monotonic()
    out = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}",
               f"http://localhost:{origin.port}/fast")
    fast = time.monotonic() - fast_started
    for t in threads:
        t.join(20)
    assert out.stdout == "200"
    print(f"a fast lookup beside 16 slow requests on 7 slow names answered in {fast * 1000:.0f} ms")
    # Sixteen slow requests on seven names: with one lookup per name on eight threads, a thread is
    # left for `localhost`, which answers long before the slow names do.
    assert fast < 1.5, f"the fast lookup took {fast:.2f}s"
    assert results == ["200"] * len(names)
    assert time.monotonic() - started >= 3.0


def test_lookups_nobody_waits_for_any_more_are_dropped_not_run_late(moongate, origin, monkeypatch):
    # One lookup thread, a 1 s connect timeout, five new names that each take 3 s to look up: the
    # first holds the thread for 3 s; the other four time out queued and are dropped, so a name
    # asked for once the first is done resolves at once (not after four more 3 s lookups).
    monkeypatch.setenv("MOONGATE_TEST_LOOKUP_DELAY", "slow.test=3000")
    port = free_port()
    text = config(port, [router(forward=True, forward_ports=(origin.port,))], allowed_addresses=["127.0.0.1"],
                  timeouts={"upstream_connect": "1s"}, top={"resolver": resolver_section(threads=1)})
    moongate(text, port)
    results = []

    def fetch(name):
        out = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}",
                   f"http://{name}:{origin.port}/")
        results.append(out.stdout)

    started = time.monotonic()
    threads = [threading.Thread(target=fetch, args=(f"flood{i}.slow.test",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == ["503"] * 5  # each gave up at its connect timeout
    assert time.monotonic() - started < 2.5
    time.sleep(max(0.0, started + 3.3 - time.monotonic()))  # the first lookup has finished
    fast_started = time.monotonic()
    out = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}",
               f"http://localhost:{origin.port}/after-the-flood")
    assert out.stdout == "200"
    assert time.monotonic() - fast_started < 1.0
