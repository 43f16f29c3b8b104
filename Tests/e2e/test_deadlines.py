"""Every stage where a client (or an upstream taking a request body) can stall the proxy has a
deadline (hardening.md §1.5, §E): request headers, request body (between reads and in all),
keep-alive idle, and a client that stops reading a response. Each is configured small here and
checked over real sockets, with a normal request served afterwards."""
import select
import socket
import threading
import time

import pytest

from conftest import free_port, recv_all, recv_exactly, recv_head, run_moongate
from helpers import config, router
from origin import RecordingOrigin

MIB = 1 << 20


def start(moongate, origin, **timeouts):
    port = free_port()
    mg = moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{origin.port}"},
                         timeouts=timeouts, top={"event_loop_threads": 1}), port)
    return port, mg


@pytest.fixture
def origin():
    o = RecordingOrigin()
    yield o
    o.close()


def get(port, path="/ok"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        return recv_all(s, timeout=5)


def answer_ok(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def time_to_eof(s, timeout):
    """Reads until EOF; returns (bytes, seconds taken)."""
    started = time.time()
    data = recv_all(s, timeout=timeout)
    return data, time.time() - started


# --- request body ---------------------------------------------------------------------------

@pytest.mark.parametrize("sent", [b"", b"0123456789"], ids=["silent after the head", "silent after ten bytes"])
def test_an_upload_that_goes_silent_gets_408_after_request_body_idle(moongate, origin, sent):
    port, _ = start(moongate, origin, request_body_idle="1s", request_body="30s")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + sent)
    data, took = time_to_eof(s, timeout=6)
    assert data.startswith(b"HTTP/1.1 408"), data[:80]
    assert b"connection: close" in data.lower()
    assert 0.8 < took < 3.0, took
    # The upstream exchange was aborted: the origin's connection was closed under it.
    deadline = time.time() + 3
    while origin.ended < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert origin.ended == 1 and origin.requests == []
    assert get(port).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("sent", [b"", b"x" * 100_000], ids=["FIN after the head", "FIN after 100,000 bytes"])
def test_a_client_that_half_closes_mid_body_releases_the_upstream_at_once(moongate, origin, sent):
    """The body can never be completed once the client sends FIN: a 400 at once (not after the body
    deadline), and the upstream connection is closed (the soak found both held for good)."""
    port, _ = start(moongate, origin, request_body_idle="30s", request_body="60s")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + sent)
    time.sleep(0.2)
    s.shutdown(socket.SHUT_WR)
    data, took = time_to_eof(s, timeout=6)
    assert data.startswith(b"HTTP/1.1 400"), data[:80]
    assert took < 2.0, took
    deadline = time.time() + 3
    while origin.ended < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert origin.ended == 1 and origin.requests == []
    assert get(port).startswith(b"HTTP/1.1 200")


def test_trickling_uploads_are_bounded_by_the_request_body_deadline(moongate, origin):
    """Twenty uploads declaring 100,000 bytes and sending a byte every 0.25 s: the idle deadline
    never passes, the total one does."""
    port, _ = start(moongate, origin, request_body_idle="1s", request_body="2s")
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        socks.append(s)
    started = time.time()
    answers = {s: b"" for s in socks}
    answered_at = {}
    while len(answered_at) < len(socks) and time.time() - started < 8:
        for s in socks:
            if s not in answered_at:
                try:
                    s.send(b"x")
                except OSError:
                    pass
        readable, _, _ = select.select([s for s in socks if s not in answered_at], [], [], 0.25)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            answers[s] += data
            if not data:
                answered_at[s] = time.time() - started
    assert len(answered_at) == 20, f"{20 - len(answered_at)} uploads still open after 8 s"
    for s in socks:
        assert answers[s].startswith(b"HTTP/1.1 408"), answers[s][:80]
        assert 1.8 < answered_at[s] < 4.0, answered_at[s]
        s.close()
    assert get(port).startswith(b"HTTP/1.1 200")


def test_an_upload_that_keeps_sending_is_not_cut_by_the_idle_deadline(moongate, origin):
    """The positive control: a body sent in pieces 0.5 s apart, within both deadlines."""
    port, _ = start(moongate, origin, request_body_idle="1s", request_body="10s")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /pieces HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef", b"gh"):
            time.sleep(0.5)
            s.sendall(piece)
        head, _ = recv_head(s)
    assert head.startswith("HTTP/1.1 200"), head
    assert origin.received().endswith(b"\r\n\r\nabcdefgh")


def test_a_stalled_upload_whose_response_has_started_is_just_closed(moongate, servers):
    """The origin answers at once, before the body: when the client then stalls, the response it
    is getting cannot become a 408; the connection closes, the response visibly truncated."""
    def early(server, conn):
        head, _ = recv_head(conn)
        server.received.append(head)
        if not head.startswith("POST"):
            return answer_ok(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        time.sleep(6)

    upstream = servers(early)
    port = free_port()
    moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{upstream.port}"},
                    timeouts={"request_body_idle": "1s"}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
    data, took = time_to_eof(s, timeout=6)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\npartial"), data
    assert b"408" not in data
    assert 0.8 < took < 3.0, took
    assert get(port).startswith(b"HTTP/1.1 200")


def test_an_upstream_that_stops_taking_the_body_is_a_504_not_the_clients_408(moongate, servers):
    """The origin reads the head and nothing more: the proxy stops reading the client (TCP
    back-pressure), and after request_body_idle the upstream is the one blamed."""
    def deaf(server, conn):
        head, _ = recv_head(conn)
        server.received.append(head)
        if not head.startswith("POST"):
            return answer_ok(conn)
        time.sleep(8)

    upstream = servers(deaf)
    port = free_port()
    moongate(config(port, [router([("*", "/", "origin")])], clusters={"origin": f"127.0.0.1:{upstream.port}"},
                    timeouts={"request_body_idle": "1s", "request_body": "60s"}), port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"POST /deaf HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (256 * MIB))
    s.setblocking(False)
    chunk, answer, started = b"z" * 65536, b"", time.time()
    while time.time() - started < 10:
        try:
            s.send(chunk)
        except BlockingIOError:
            readable, _, _ = select.select([s], [], [], 0.1)
            if readable:
                try:
                    data = s.recv(65536)
                except OSError:
                    break
                answer += data
                if not data or b"\r\n\r\n" in answer:
                    break
        except OSError:
            break
    assert answer.startswith(b"HTTP/1.1 504"), answer[:80]
    assert time.time() - started < 8
    s.close()
    assert get(port).startswith(b"HTTP/1.1 200")


# --- request headers and keep-alive --------------------------------------------------------

def test_a_new_connection_that_sends_nothing_is_closed_without_an_answer(moongate, origin):
    port, _ = start(moongate, origin, request_headers="1s", keepalive_idle="10s")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    data, took = time_to_eof(s, timeout=5)
    assert data == b""
    assert 0.8 < took < 3.0, took
    assert get(port).startswith(b"HTTP/1.1 200")


LAST_REQUEST = {
    "no body": b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n",
    "a Content-Length body": b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "a chunked body": b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("last", sorted(LAST_REQUEST))
def test_an_idle_keep_alive_connection_closes_after_keepalive_idle_and_sends_nothing(moongate, origin, last):
    """Whatever the last request's framing, the proxy sees where it ended: no head has begun, so
    the keep-alive timer runs (1 s, silent), not the headers one (10 s, 408)."""
    port, _ = start(moongate, origin, request_headers="10s", keepalive_idle="1s")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(LAST_REQUEST[last])
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200") and rest + recv_exactly(s, 4 - len(rest)) == b"/one"
    data, took = time_to_eof(s, timeout=6)
    assert data == b""
    assert 0.8 < took < 3.0, took  # keepalive_idle, not request_headers
    assert get(port).startswith(b"HTTP/1.1 200")


def test_the_headers_deadline_starts_at_the_first_byte_of_a_request(moongate, origin):
    """Between requests the keep-alive timer runs (3 s here), not the 1 s headers one; once a
    request starts, its head has 1 s."""
    port, _ = start(moongate, origin, request_headers="1s", keepalive_idle="3s")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200") and rest + recv_exactly(s, 4 - len(rest)) == b"/one"
    time.sleep(1.8)  # longer than request_headers: the connection stays
    s.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
    head, rest = recv_head(s)
    assert head.startswith("HTTP/1.1 200") and rest + recv_exactly(s, 4 - len(rest)) == b"/two"
    time.sleep(1.8)
    s.sendall(b"GET /three HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    data, took = time_to_eof(s, timeout=6)
    assert data.startswith(b"HTTP/1.1 408"), data[:80]
    assert 0.8 < took < 2.5, took
    assert get(port).startswith(b"HTTP/1.1 200")


# --- a client that stops reading -----------------------------------------------------------

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_is_dropped_and_buffers_stay_bounded(moongate):
    sent = {"bytes": 0, "done": threading.Event()}

    def endless(method, path, headers, body, conn):
        if path != "/huge":
            return RecordingOrigin.ok(method, path, headers, body, conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 << 30))
        chunk = b"x" * 65536
        try:
            while sent["bytes"] < (4 << 30):
                conn.sendall(chunk)
                sent["bytes"] += len(chunk)
        finally:
            sent["done"].set()
        return None

    origin = RecordingOrigin(endless)
    try:
        port, mg = start(moongate, origin, response_write_idle="2s")
        assert get(port).startswith(b"HTTP/1.1 200")
        baseline = rss(mg.proc.pid)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(200)
        assert head.startswith(b"HTTP/1.1 200"), head
        # The client reads nothing more: the proxy stops reading the origin, memory stays flat.
        time.sleep(1.0)
        first, peak = sent["bytes"], rss(mg.proc.pid)
        time.sleep(0.6)
        second, peak = sent["bytes"], max(peak, rss(mg.proc.pid))
        assert second < 64 * MIB, f"the origin could send {second >> 20} MiB to a client that reads nothing"
        assert second - first < 8 * MIB, (first, second)
        assert peak - baseline < 64 * MIB, f"RSS grew by {(peak - baseline) >> 20} MiB"
        # No write progress for response_write_idle (2 s): the connection is dropped, and so is the
        # upstream exchange.
        assert sent["done"].wait(timeout=5), "the upstream exchange was not aborted"
        drained = recv_all(s, timeout=5)
        assert len(drained) < 64 * MIB
        s.close()
        assert get(port).startswith(b"HTTP/1.1 200")
    finally:
        origin.close()


def test_a_slow_but_steady_reader_is_not_dropped(moongate):
    """The positive control: a 4 MiB body read in 256 KiB steps 0.3 s apart outlasts the 1 s
    write deadline many times over, and arrives whole."""
    size = 4 * MIB

    def big(method, path, headers, body, conn):
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size

    origin = RecordingOrigin(big)
    try:
        port, _ = start(moongate, origin, response_write_idle="1s")
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        started = time.time()
        while time.time() - started < 30:
            time.sleep(0.3)
            step = recv_exactly(s, 256 * 1024, timeout=2)
            received += step
            if len(step) < 256 * 1024:
                break
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert len(body) == size, len(body)
        assert time.time() - started > 2  # it really was slow
    finally:
        origin.close()


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["request_body_idle", "request_body", "keepalive_idle", "response_write_idle"])
@pytest.mark.parametrize("value", ["soon", "0s", "-1s", "2d", "48h"])
def test_bad_timeout_values_are_refused_with_file_and_line(tmp_path, key, value):
    path = tmp_path / "bad.yaml"
    path.write_text(config(free_port(), [router([("*", "/", "origin")])], clusters={"origin": "127.0.0.1:9"},
                           timeouts={"request_headers": "5s", key: value}))
    out = run_moongate("validate", "--config", str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout + out.stderr
    line = path.read_text().splitlines().index(f"  {key}: {value}") + 1
    assert f"{path}:{line}: timeouts.{key}:" in text, text


def test_good_timeout_values_are_accepted(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(config(free_port(), [router([("*", "/", "origin")])], clusters={"origin": "127.0.0.1:9"},
                           timeouts={"request_body_idle": "250ms", "request_body": "2m", "keepalive_idle": "1h",
                                     "response_write_idle": "30"}))
    out = run_moongate("validate", "--config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
