"""Certificates replaced while Moongate serves: a valid new pair serves the next handshake, a
broken one (not PEM, a key that does not match, an expired certificate) is rejected with its file
and reason on the admin `/policy` and in the log while the previous pair keeps serving, and open
connections are never touched, even with handshakes running all along."""
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from certs import CA, fingerprint
from conftest import BIN, free_port, recv_exactly, recv_head, wait_port
from origin import Origin
from test_tls_listener import PLUGIN, tls_config


@pytest.fixture
def served(moongate, tmp_path):
    """Moongate with pairs a.test and b.test, watching them; yields (port, admin, ca, paths, mg)."""
    origin = Origin()
    ca = CA(tmp_path)
    a = ca.issue("a", ["a.test"])
    b = ca.issue("b", ["b.test"])
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    port, admin = free_port(), free_port()
    mg = moongate(tls_config(port, origin.port, plugin, [(a[0], a[1], None, False), (b[0], b[1], None, False)], admin_port=admin), port)
    wait_port(admin)  # the admin listener starts after the proxy's
    yield port, admin, ca, a, b, mg
    origin.close()


def peer_fingerprint(port, ca, name="a.test"):
    import hashlib
    ctx = ssl.create_default_context(cafile=str(ca.path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=name) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def replace(path, data):
    """Writes `data` to a temporary file beside `path` and renames it over `path` (atomic)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)


def response(sock):
    """Reads one response with a Content-Length body; returns its status line."""
    head, rest = recv_head(sock)
    length = int([line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("content-length:")][0])
    if len(rest) < length:
        recv_exactly(sock, length - len(rest))
    return head.split("\r\n")[0]


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def policy(admin):
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin}/policy", timeout=5).read())


def test_a_new_pair_serves_the_next_handshake_and_open_connections_are_untouched(served, tmp_path):
    port, admin, ca, a, b, _ = served
    before = peer_fingerprint(port, ca)
    assert before == fingerprint(a[0])
    # An open keep-alive connection, made before the rotation.
    ctx = ssl.create_default_context(cafile=str(ca.path))
    held = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="a.test")
    held.sendall(b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert response(held).startswith("HTTP/1.1 200")

    fresh = CA.issue(ca, "a-new", ["a.test"])
    replace(a[1], fresh[1].read_bytes())
    replace(a[0], fresh[0].read_bytes())
    assert wait_for(lambda: peer_fingerprint(port, ca) == fingerprint(fresh[0]))
    assert peer_fingerprint(port, ca, "b.test") == fingerprint(b[0])

    held.sendall(b"GET /two HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert response(held).startswith("HTTP/1.1 200")
    import hashlib
    assert hashlib.sha256(held.getpeercert(binary_form=True)).hexdigest() == before
    held.close()
    assert policy(admin)["tls"][0]["rejected"] == []


@pytest.mark.parametrize("breakage", ["garbage", "mismatched key", "expired"])
def test_a_broken_pair_is_rejected_and_reported_while_the_old_one_serves(served, tmp_path, breakage):
    port, admin, ca, a, b, mg = served
    if breakage == "garbage":
        replace(a[0], b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        bad_file, reason = str(a[0]), "PEM"
    elif breakage == "mismatched key":
        replace(a[1], b[1].read_bytes())
        bad_file, reason = str(a[1]), "does not match"
    else:
        expired = CA.issue(ca, "a-old", ["a.test"], expired=True)
        replace(a[1], expired[1].read_bytes())
        replace(a[0], expired[0].read_bytes())
        bad_file, reason = str(a[0]), "expired"
    assert wait_for(lambda: policy(admin)["tls"][0]["rejected"] != [])
    rejected = policy(admin)["tls"][0]["rejected"]
    assert rejected[0]["file"] == bad_file and reason in rejected[0]["reason"]
    assert "certificate rejected" in mg.logs() and bad_file in mg.logs()
    # The previous pair still serves, and so does the other one.
    assert peer_fingerprint(port, ca) != ""
    assert peer_fingerprint(port, ca, "b.test") == fingerprint(b[0])
    # Fixing the files clears the report.
    good = CA.issue(ca, "a-fixed", ["a.test"])
    replace(a[1], good[1].read_bytes())
    replace(a[0], good[0].read_bytes())
    assert wait_for(lambda: peer_fingerprint(port, ca) == fingerprint(good[0]))
    assert wait_for(lambda: policy(admin)["tls"][0]["rejected"] == [])


def test_rotation_under_load_fails_no_handshake(served, tmp_path):
    port, admin, ca, a, b, _ = served
    failures, successes, seen = [], [0], set()
    stop = threading.Event()

    def load():
        ctx = ssl.create_default_context(cafile=str(ca.path))
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="a.test") as tls:
                    tls.sendall(b"GET /load HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                    head, _ = recv_head(tls)
                    assert head.startswith("HTTP/1.1 200"), head
                    import hashlib
                    seen.add(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())
                    successes[0] += 1
            except Exception as error:  # noqa: BLE001 - every failure is what the test counts
                failures.append(repr(error))

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    issued = []
    for round_ in range(5):
        time.sleep(0.4)
        pair = CA.issue(ca, f"a-{round_}", ["a.test"])
        issued.append(fingerprint(pair[0]))
        # Certificate first, key second: for a moment they do not match, and that state is refused.
        replace(a[0], pair[0].read_bytes())
        time.sleep(0.05)
        replace(a[1], pair[1].read_bytes())
    assert wait_for(lambda: peer_fingerprint(port, ca) == issued[-1])
    time.sleep(0.3)
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert failures == []
    assert successes[0] > 50
    assert len(seen & set(issued)) >= 2


def test_a_broken_pair_at_start_up_is_an_error_naming_the_file_and_validate_finds_it(tmp_path):
    ca = CA(tmp_path)
    a = ca.issue("a", ["a.test"])
    b = ca.issue("b", ["b.test"])
    plugin = tmp_path / "gate.lua"
    plugin.write_text(PLUGIN)
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(tls_config(free_port(), free_port(), plugin, [(a[0], b[1], None, False)]))
    out = subprocess.run([BIN, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert str(b[1]) in out.stderr and "does not match" in out.stderr
    # `moongate validate` finds it before a deploy, and passes once the pair is right.
    out = subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and str(b[1]) in out.stderr and "TLS file(s) cannot be used" in out.stderr
    cfg.write_text(tls_config(free_port(), free_port(), plugin, [(a[0], a[1], None, False)]))
    out = subprocess.run([BIN, "validate", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
