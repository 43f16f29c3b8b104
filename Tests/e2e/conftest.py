"""Shared fixtures for the end-to-end tests: the built binary, small upstreams on loopback,
and a running Moongate with a generated config. Everything listens on 127.0.0.1 (or ::1)."""
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MOONGATE_BIN", str(ROOT / ".build" / "debug" / "moongate"))
PLUGINS = str(ROOT / "plugins")


def run_moongate(*args, cwd=ROOT, timeout=60):
    return subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class Moongate:
    """A moongate process started on a config text; stopped by its PID."""

    def __init__(self, tmp_path, config_text, name="moongate"):
        self.config = tmp_path / f"{name}.yaml"
        self.config.write_text(config_text)
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([BIN, "serve", "--config", str(self.config)], stdout=self.log, stderr=self.log)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def logs(self):
        self.log.flush()
        return self.log_path.read_text()


@pytest.fixture
def moongate(tmp_path):
    """Starts moongate on a config text and waits for `port`; stops every started one at the end."""
    started = []

    def start(config_text, port, name="moongate"):
        mg = Moongate(tmp_path, config_text, name)
        started.append(mg)
        try:
            wait_port(port)
        except TimeoutError:
            mg.stop()
            raise AssertionError("moongate did not start:\n" + mg.logs())
        return mg

    yield start
    for mg in started:
        mg.stop()


class ThreadedServer:
    """A TCP server on loopback running `handle(conn)` per connection in a thread."""

    def __init__(self, handle, family=socket.AF_INET, host="127.0.0.1"):
        self.sock = socket.socket(family)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.accepted = 0
        self.received = []
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            conn.settimeout(10)
            self.handle(self, conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def servers():
    made = []

    def make(handle, **kw):
        server = ThreadedServer(handle, **kw)
        made.append(server)
        return server

    yield make
    for s in made:
        s.close()


@pytest.fixture(autouse=True)
def _bounded(request):
    """Every test ends within 90 s, whatever happens (SIGALRM fails it)."""
    def expire(signum, frame):
        raise TimeoutError(f"{request.node.name} ran over 90 s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def recv_exactly(conn, n, timeout=5.0):
    """Reads exactly n bytes (fewer only if the peer closes first)."""
    conn.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_all(conn, timeout=5.0):
    """Reads until EOF (or timeout); returns the bytes."""
    conn.settimeout(timeout)
    chunks = []
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
    except socket.timeout:
        pass
    return b"".join(chunks)


def recv_head(conn, timeout=5.0):
    """Reads an HTTP head (through the blank line); returns (head, rest)."""
    conn.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def echo(server, conn):
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        server.received.append(data)
        conn.sendall(data)
