"""The soak's load generators: keep-alive GETs, uploads, CONNECT tunnels, WebSockets and h2c GETs,
each a thread that paces itself (bounded rate and concurrency) and checks every byte it gets back.
Any failure here is a soak failure: the injected faults run on their own connections."""
import hashlib
import http.client
import json
import os
import random
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
from websockets.sync.client import connect as ws_connect

from origins import body_bytes

DOWNLOAD_SIZES = [512, 4096, 16384, 65536, 262144]
UPLOAD_MIN, UPLOAD_MAX = 4 * 1024, 4 * 1024 * 1024
RANDOM = os.urandom(UPLOAD_MAX + 65536)   # upload bodies and tunnel payloads are slices of this


class PolicyWatch:
    """Which soak_tag versions may appear on responses: any version written valid so far, and,
    while a broken script is on disk, only the last good one (the old generation keeps serving)."""

    def __init__(self, first):
        self.lock = threading.Lock()
        self.valid = {first}
        self.good = first
        self.broken_since = None
        self.checked_while_broken = 0   # responses checked while a broken script was on disk

    def wrote(self, version):
        with self.lock:
            self.valid.add(version)
            self.good = version
            self.broken_since = None

    def broke(self):
        with self.lock:
            self.broken_since = time.time()

    def problem(self, seen, started):
        """None if `seen` (the x-soak-policy value) is right for a request started at `started`."""
        with self.lock:
            if seen is None:
                return "response without the policy tag"
            if self.broken_since is not None and started > self.broken_since + 0.5:
                self.checked_while_broken += 1
                if seen != self.good:
                    return "policy version changed while the script was broken"
            if seen not in self.valid:
                return "unknown policy version"
        return None


class Context:
    """What every generator and fault shares: the proxy's port, the recorder, the policy watch,
    the origins and the stop flag."""

    def __init__(self, port, rec, policy, origins):
        self.port = port
        self.origins = origins
        self.rec = rec
        self.policy = policy
        self.stop = threading.Event()

    def pause(self, seconds):
        return self.stop.wait(seconds)


def cause_of(error):
    if isinstance(error, socket.timeout):
        return "timeout"
    return type(error).__name__


class Mismatch(Exception):
    """An answer that arrived but is wrong."""


def get_worker(ctx, wid):
    """One keep-alive connection (reopened only after a failure), GETs of 512 B to 256 KiB."""
    rng = random.Random(wid)
    conn = None
    while not ctx.stop.is_set():
        size = rng.choice(DOWNLOAD_SIZES)
        started = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=15)
            conn.request("GET", f"/data/{size}", headers={"Host": "web.soak"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise Mismatch(f"status {response.status}")
            if body != body_bytes(size):
                raise Mismatch("body differs")
            problem = ctx.policy.problem(response.getheader("x-soak-policy"), started)
            if problem:
                raise Mismatch(problem)
            ctx.rec.success("get", started)
        except Exception as error:
            ctx.rec.failure("get", str(error) if isinstance(error, Mismatch) else cause_of(error), repr(error))
            if conn is not None:
                conn.close()
            conn = None
        ctx.pause(0.05)
    if conn is not None:
        conn.close()


def upload_worker(ctx, wid):
    """POSTs of 4 KiB to 4 MiB (log-uniform), a third of them chunked; the origin's digest must match."""
    rng = random.Random(1000 + wid)
    conn = None
    while not ctx.stop.is_set():
        size = int(UPLOAD_MIN * (UPLOAD_MAX / UPLOAD_MIN) ** rng.random())
        offset = rng.randrange(0, 65536)
        body = memoryview(RANDOM)[offset:offset + size]
        chunked = rng.random() < 1 / 3
        started = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", ctx.port, timeout=30)
            if chunked:
                pieces = (body[i:i + 50000] for i in range(0, size, 50000))
                conn.request("POST", "/echo", body=pieces, encode_chunked=True,
                             headers={"Host": "web.soak", "Transfer-Encoding": "chunked"})
            else:
                conn.request("POST", "/echo", body=body, headers={"Host": "web.soak"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                raise Mismatch(f"status {response.status}")
            got = json.loads(answer)
            if got["length"] != size or got["sha256"] != hashlib.sha256(body).hexdigest():
                raise Mismatch("upload digest differs")
            problem = ctx.policy.problem(response.getheader("x-soak-policy"), started)
            if problem:
                raise Mismatch(problem)
            ctx.rec.success("upload", started)
        except Exception as error:
            ctx.rec.failure("upload", str(error) if isinstance(error, Mismatch) else cause_of(error), repr(error))
            if conn is not None:
                conn.close()
            conn = None
        ctx.pause(0.2)
    if conn is not None:
        conn.close()


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 262144))
        if not chunk:
            raise Mismatch("tunnel closed early")
        data += chunk
    return bytes(data)


def open_tunnel(port, target):
    """CONNECT through the proxy; returns the socket after a 200 (and any bytes after its head)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise Mismatch("closed before the CONNECT answer")
        head += chunk
    line = head.split(b"\r\n", 1)[0]
    if not line.startswith(b"HTTP/1.1 200"):
        sock.close()
        raise Mismatch("CONNECT answered " + line.decode("latin-1")[:40])
    return sock, head.split(b"\r\n\r\n", 1)[1]


def connect_worker(ctx, wid, echo_port):
    """Tunnels to the echo server: 3-20 rounds of 1-64 KiB each checked byte for byte, then a
    half-close that the echo server answers with its own FIN. One operation per tunnel; its latency
    is the time to the 200."""
    rng = random.Random(2000 + wid)
    while not ctx.stop.is_set():
        started = time.time()
        sock = None
        try:
            sock, early = open_tunnel(ctx.port, f"127.0.0.1:{echo_port}")
            opened = time.time()
            if early:
                raise Mismatch("bytes before any were sent")
            for _ in range(rng.randint(3, 20)):
                n = rng.randint(1, 65536)
                offset = rng.randrange(0, len(RANDOM) - n)
                payload = RANDOM[offset:offset + n]
                sock.sendall(payload)
                if recv_exactly(sock, n) != payload:
                    raise Mismatch("tunnel bytes differ")
            sock.shutdown(socket.SHUT_WR)
            if sock.recv(1):
                raise Mismatch("bytes after the echo")
            ctx.rec.success("connect", started, opened)
        except Exception as error:
            ctx.rec.failure("connect", str(error) if isinstance(error, Mismatch) else cause_of(error), repr(error))
        finally:
            if sock is not None:
                sock.close()
        ctx.pause(0.1)


def ws_worker(ctx, wid):
    """WebSocket sessions (HTTP/1.1 Upgrade through the proxy) of 5-30 echoed messages, text and
    binary, 1 B to 64 KiB. One operation per message."""
    rng = random.Random(3000 + wid)
    while not ctx.stop.is_set():
        try:
            with ws_connect(f"ws://127.0.0.1:{ctx.port}/ws/chat", open_timeout=15, close_timeout=5,
                            max_size=1 << 20) as ws:
                for _ in range(rng.randint(5, 30)):
                    if ctx.stop.is_set():
                        break
                    n = rng.randint(1, 65536)
                    offset = rng.randrange(0, len(RANDOM) - n)
                    message = RANDOM[offset:offset + n]
                    if rng.random() < 0.5:
                        message = message.hex()[:n]
                    started = time.time()
                    ws.send(message)
                    if ws.recv(timeout=15) != message:
                        raise Mismatch("websocket echo differs")
                    ctx.rec.success("websocket", started)
                    ctx.pause(0.02)
        except Exception as error:
            ctx.rec.failure("websocket", str(error) if isinstance(error, Mismatch) else cause_of(error), repr(error))
        ctx.pause(0.1)


def h2_get(sock, conn, size):
    """One GET on a new stream of an h2c connection; returns (status, headers, body)."""
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":path", f"/data/{size}"), (":scheme", "http"),
                            (":authority", "web.soak")], end_stream=True)
    sock.sendall(conn.data_to_send())
    headers, body = {}, bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            raise Mismatch("h2 connection closed")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                raise Mismatch(f"h2 stream reset ({event.error_code!r})")
            elif isinstance(event, h2.events.ConnectionTerminated):
                raise Mismatch(f"h2 GOAWAY ({event.error_code!r})")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                return int(headers.get(":status", 0)), headers, bytes(body)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)


def h2_worker(ctx, wid):
    """h2c with prior knowledge: connections of 10-40 sequential GETs."""
    rng = random.Random(4000 + wid)
    while not ctx.stop.is_set():
        sock = None
        broken = False
        try:
            sock = socket.create_connection(("127.0.0.1", ctx.port), timeout=15)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            for _ in range(rng.randint(10, 40)):
                if ctx.stop.is_set():
                    break
                size = rng.choice(DOWNLOAD_SIZES)
                started = time.time()
                try:
                    status, headers, body = h2_get(sock, conn, size)
                    if status != 200:
                        raise Mismatch(f"status {status}")
                    if body != body_bytes(size):
                        raise Mismatch("body differs")
                    problem = ctx.policy.problem(headers.get("x-soak-policy"), started)
                    if problem:
                        raise Mismatch(problem)
                    ctx.rec.success("h2", started)
                except Mismatch as error:
                    ctx.rec.failure("h2", str(error), repr(error))
                    if str(error).startswith("h2 "):
                        broken = True
                        break
                ctx.pause(0.05)
            if not broken:
                conn.close_connection()
                sock.sendall(conn.data_to_send())
        except Exception as error:
            ctx.rec.failure("h2", cause_of(error), repr(error))
        finally:
            if sock is not None:
                sock.close()
        ctx.pause(0.1)


def start(ctx, echo_port, gets=4, uploads=2, tunnels=2, websockets=2, h2c=2):
    """Starts the workers; returns their threads."""
    threads = []
    for i in range(gets):
        threads.append(threading.Thread(target=get_worker, args=(ctx, i), daemon=True))
    for i in range(uploads):
        threads.append(threading.Thread(target=upload_worker, args=(ctx, i), daemon=True))
    for i in range(tunnels):
        threads.append(threading.Thread(target=connect_worker, args=(ctx, i, echo_port), daemon=True))
    for i in range(websockets):
        threads.append(threading.Thread(target=ws_worker, args=(ctx, i), daemon=True))
    for i in range(h2c):
        threads.append(threading.Thread(target=h2_worker, args=(ctx, i), daemon=True))
    for t in threads:
        t.start()
    return threads
