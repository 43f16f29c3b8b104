"""Injected faults, each labelled, on connections of their own: upstreams that reset (before and
mid-response, over HTTP/1.1 and h2c), stall or half-close; clients that vanish mid-upload,
mid-download or mid-tunnel, or reset an h2c stream mid-upload (Moongate must then close the
upstream side); and reloads every few seconds (plugin rewrites, config rewrites with POST /reload)
with broken-script windows during which the old generation must keep serving."""
import http.client
import itertools
import random
import socket
import struct
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events

from origins import BLOCK, HALF_CLOSE_BODY
from proxy import BROKEN_PLUGIN, TAG_PLUGIN, UPSTREAM_RESPONSE_TIMEOUT
from traffic import open_tunnel


def reset_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def fetch(port, path, timeout=15):
    """GET through the proxy on a new connection: (status, body, error while reading the body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "fault.soak"})
        response = conn.getresponse()
        try:
            return response.status, response.read(), None
        except Exception as error:
            return response.status, None, error
    finally:
        conn.close()


def cut_response(ctx, kind, path):
    """The origin stops mid-body (reset, or FIN short of its Content-Length): the client must see a
    cut response (never a complete one), or a 502 if nothing had been relayed yet."""
    status, body, error = fetch(ctx.port, path)
    if status == 200 and error is not None:
        ctx.rec.failure(kind, "response cut", repr(error), injected=True)
    elif status == 502:
        ctx.rec.failure(kind, "502", "", injected=True)
    elif status == 200:
        ctx.rec.failure(kind, "cut response delivered as complete", f"{len(body)} bytes")
    else:
        ctx.rec.failure(kind, f"unexpected status {status}", "")


def upstream_reset(ctx):
    """1 MiB announced (Content-Length), 64 KiB sent, then RST."""
    cut_response(ctx, "fault:upstream_reset_mid_response", "/fault/reset")


def upstream_reset_chunked(ctx):
    """A chunked body: one 64 KiB chunk, then RST (no last chunk)."""
    cut_response(ctx, "fault:upstream_reset_mid_chunked", "/fault/reset-chunked")


def upstream_reset_close_delimited(ctx):
    """A close-delimited body: 64 KiB, then RST instead of FIN."""
    cut_response(ctx, "fault:upstream_reset_mid_close_delimited", "/fault/reset-close-delimited")


def upstream_half_close_short(ctx):
    """1 MiB announced, 5 KiB sent, then FIN (the origin keeps reading)."""
    cut_response(ctx, "fault:upstream_half_close_short", "/fault/half-close-short")


def upstream_reset_before_head(ctx):
    """The origin resets before answering: 502 (or 503)."""
    kind = "fault:upstream_reset_before_head"
    status, _, _ = fetch(ctx.port, "/fault/reset-before-head")
    if status in (502, 503):
        ctx.rec.failure(kind, f"{status}", "", injected=True)
    else:
        ctx.rec.failure(kind, f"unexpected status {status}", "")


def upstream_stall(ctx):
    """The origin never answers: 504 once timeouts.upstream_response has passed, not much later."""
    kind = "fault:upstream_stall"
    started = time.time()
    status, _, _ = fetch(ctx.port, "/fault/stall", timeout=UPSTREAM_RESPONSE_TIMEOUT + 15)
    elapsed = time.time() - started
    if status == 504 and UPSTREAM_RESPONSE_TIMEOUT - 0.2 <= elapsed <= UPSTREAM_RESPONSE_TIMEOUT + 3:
        ctx.rec.failure(kind, "504 after the upstream timeout", f"{elapsed:.2f}s", injected=True)
    else:
        ctx.rec.failure(kind, f"status {status} after {elapsed:.1f}s (504 after "
                              f"{UPSTREAM_RESPONSE_TIMEOUT:.0f}s expected)", "")


def upstream_half_close(ctx):
    """The origin sends a close-delimited body and half-closes: the client gets all of it, complete
    (re-chunked), in bounded time."""
    kind = "fault:upstream_half_close"
    started = time.time()
    status, body, error = fetch(ctx.port, "/fault/half-close", timeout=10)
    elapsed = time.time() - started
    if status == 200 and error is None and body == HALF_CLOSE_BODY and elapsed < 5:
        ctx.rec.failure(kind, "body passed whole, then closed", f"{elapsed:.2f}s", injected=True)
    else:
        ctx.rec.failure(kind, "half-closed body not passed whole",
                        f"status {status} error {error!r} {len(body or b'')} bytes {elapsed:.1f}s")


def h2_fetch(port, path, timeout):
    """GET on stream 1 of a new h2c connection: (status, body bytes, how the stream ended, seconds);
    the end is 'ended', 'reset', 'goaway', 'closed' or 'timeout'."""
    started = time.time()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "fault.soak")],
                      end_stream=True)
    status, received = None, 0
    try:
        sock.sendall(conn.data_to_send())
        while True:
            sock.settimeout(max(0.01, started + timeout - time.time()))
            data = sock.recv(65536)
            if not data:
                return status, received, "closed", time.time() - started
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    received += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    return status, received, "ended", time.time() - started
                elif isinstance(event, h2.events.StreamReset):
                    return status, received, "reset", time.time() - started
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return status, received, "goaway", time.time() - started
            sock.sendall(conn.data_to_send())
    except socket.timeout:
        return status, received, "timeout", time.time() - started
    finally:
        sock.close()


def h2_upstream_reset(ctx):
    """Over HTTP/2 the cut must show as RST_STREAM (or a 502), never as END_STREAM."""
    kind = "fault:h2_upstream_reset_mid_response"
    status, received, end, _ = h2_fetch(ctx.port, "/fault/reset", 15)
    if (status == 200 and end == "reset") or (status == 502 and end == "ended"):
        ctx.rec.failure(kind, f"{status}, stream {end}", f"{received} bytes", injected=True)
    else:
        ctx.rec.failure(kind, f"{status}, stream {end} (RST_STREAM expected)", f"{received} bytes")


def h2_upstream_stall(ctx):
    """Over HTTP/2 too, a stalled upstream gets a 504 after timeouts.upstream_response."""
    kind = "fault:h2_upstream_stall"
    status, _, end, elapsed = h2_fetch(ctx.port, "/fault/stall", UPSTREAM_RESPONSE_TIMEOUT + 5)
    if status == 504 and UPSTREAM_RESPONSE_TIMEOUT - 0.2 <= elapsed <= UPSTREAM_RESPONSE_TIMEOUT + 3:
        ctx.rec.failure(kind, "504 after the upstream timeout", f"{elapsed:.2f}s", injected=True)
    else:
        ctx.rec.failure(kind, f"no 504 within {UPSTREAM_RESPONSE_TIMEOUT + 3:.0f}s",
                        f"status {status}, stream {end} after {elapsed:.1f}s")


LET_GO = 10.0   # seconds Moongate may take to close an upstream once its client has vanished
_keys = itertools.count(1)


def new_key():
    return f"k{next(_keys)}-{random.getrandbits(32):08x}"


def reached_upstream(ctx, key):
    holds = ctx.origins.holds
    return holds.wait(holds.opened, key, 3) is not None


def let_go(ctx, kind, key, what, vanished):
    """The upstream side of `key` must close within LET_GO seconds of the client vanishing."""
    holds = ctx.origins.holds
    closed = holds.wait(holds.closed, key, LET_GO)
    if closed is None:
        ctx.rec.failure(kind, f"upstream still open {LET_GO:.0f}s after the client vanished", what)
        holds.mark(holds.released, key)   # counted once: the origin lets go, not Moongate
    else:
        ctx.rec.failure(kind, f"{what}; upstream closed", f"{max(0.0, closed - vanished):.2f}s", injected=True)


def vanish(sock, rng):
    """Closes with RST or FIN (at random); returns which and when."""
    if rng.random() < 0.5:
        reset_close(sock)
        return "RST", time.time()
    sock.close()
    return "FIN", time.time()


def client_vanish_upload(ctx, rng):
    """A client starts a 2 MiB upload (Content-Length or chunked), sends 256 KiB and vanishes."""
    kind = "fault:client_vanish_mid_upload"
    key = new_key()
    sock = socket.create_connection(("127.0.0.1", ctx.port), timeout=10)
    head = f"POST /fault/hold/{key} HTTP/1.1\r\nHost: fault.soak\r\n".encode()
    if rng.random() < 0.5:
        framing = "chunked"
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n"
                     + b"".join(b"10000\r\n" + BLOCK + b"\r\n" for _ in range(4)))
    else:
        framing = "Content-Length"
        sock.sendall(head + b"Content-Length: 2097152\r\n\r\n" + BLOCK * 4)
    reached = reached_upstream(ctx, key)
    how, when = vanish(sock, rng)
    if not reached:
        ctx.rec.failure(kind, "upload never reached the upstream", f"{framing}, {how}")
        return
    let_go(ctx, kind, key, f"client {how} mid-body ({framing})", when)


def client_vanish_download(ctx, rng):
    """A client asks for 8 MiB, reads 64 KiB and vanishes."""
    kind = "fault:client_vanish_mid_download"
    key = new_key()
    sock = socket.create_connection(("127.0.0.1", ctx.port), timeout=10)
    sock.sendall(f"GET /fault/hold-download/{key} HTTP/1.1\r\nHost: fault.soak\r\n\r\n".encode())
    got = 0
    while got < 65536:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    how, when = vanish(sock, rng)
    if got < 65536:
        ctx.rec.failure(kind, "download ended early", f"{got} bytes")
        return
    let_go(ctx, kind, key, f"client {how} mid-download", when)


def client_vanish_mid_tunnel(ctx, rng):
    """A client opens a tunnel, sends 64 KiB and vanishes: the target side must close too."""
    kind = "fault:client_vanish_mid_tunnel"
    key = new_key()
    sock, _ = open_tunnel(ctx.port, f"127.0.0.1:{ctx.origins.tunnel_hold.port}")
    sock.sendall(key.encode() + b"\n" + BLOCK)
    reached = reached_upstream(ctx, key)
    how, when = vanish(sock, rng)
    if not reached:
        ctx.rec.failure(kind, "tunnel bytes never reached the target", how)
        return
    let_go(ctx, kind, key, f"client {how} mid-tunnel", when)


def h2_client_reset_mid_upload(ctx, rng):
    """Over h2c, a client announces 1 MiB, sends 48 KiB of DATA and resets the stream (CANCEL) while
    its connection stays open: the stream's upstream must close."""
    kind = "fault:h2_client_reset_mid_upload"
    key = new_key()
    sock = socket.create_connection(("127.0.0.1", ctx.port), timeout=10)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":path", f"/fault/hold/{key}"), (":scheme", "http"),
                              (":authority", "fault.soak"), ("content-length", str(1 << 20))])
        for i in range(3):
            conn.send_data(1, BLOCK[i * 16384:(i + 1) * 16384])
        sock.sendall(conn.data_to_send())
        reached = reached_upstream(ctx, key)
        conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
        sock.sendall(conn.data_to_send())
        if not reached:
            ctx.rec.failure(kind, "upload never reached the upstream", "")
            return
        let_go(ctx, kind, key, "client RST_STREAM mid-body", time.time())
    finally:
        sock.close()


FAULTS = [upstream_reset, upstream_stall, client_vanish_upload, upstream_half_close, upstream_reset_chunked,
          h2_upstream_reset, client_vanish_mid_tunnel, upstream_reset_before_head, client_vanish_download,
          upstream_half_close_short, h2_client_reset_mid_upload, upstream_reset_close_delimited, h2_upstream_stall]
WITH_RNG = {client_vanish_upload, client_vanish_download, client_vanish_mid_tunnel, h2_client_reset_mid_upload}
NAMES = [f.__name__ for f in FAULTS]


def fault_loop(ctx, skip=(), every=1.5):
    """Plays the faults in turn, one every `every` seconds (a stall takes the upstream timeout);
    `skip`: names of faults to leave out."""
    rng = random.Random(7)
    played = [f for f in FAULTS if f.__name__ not in skip]
    i = 0
    while played and not ctx.pause(every):
        fault = played[i % len(played)]
        i += 1
        try:
            if fault in WITH_RNG:
                fault(ctx, rng)
            else:
                fault(ctx)
        except Exception as error:
            ctx.rec.failure("fault:" + fault.__name__, "fault injection broke: " + type(error).__name__, repr(error))


class Reloader:
    """Every `every` seconds: a plugin rewrite (picked up by the file watcher) or a config rewrite
    followed by POST /reload, in turn; during each broken window (a syntax error written into the
    plugin for `broken_for` seconds) every reload must be refused and the generation must not move."""

    def __init__(self, ctx, mg, broken_at, every=3.0, broken_for=10.0):
        self.ctx, self.mg = ctx, mg
        self.broken_at = sorted(broken_at)   # seconds after start
        self.every, self.broken_for = every, broken_for
        self.config_text = mg.config.read_text()

    def generation(self):
        return self.mg.policy()["generation"]

    def write_version(self):
        self.mg.version += 1
        version = f"v{self.mg.version}"
        self.ctx.policy.wrote(version)
        self.mg.tag_path.write_text(TAG_PLUGIN.format(version=version))
        return version

    def file_change(self):
        before = self.generation()
        version = self.write_version()
        deadline = time.time() + 3
        while time.time() < deadline:
            if self.generation() > before:
                self.ctx.rec.success("reload:plugin_rewrite", deadline - 3)
                return
            time.sleep(0.05)
        self.ctx.rec.failure("reload:plugin_rewrite", "plugin rewrite not live within 3 s", version)

    def admin_reload(self, n):
        self.mg.config.write_text(self.config_text + f"# reload {n}\n")
        started = time.time()
        status, answer = self.mg.reload()
        if status == 200 and answer.get("result") == "loaded":
            self.ctx.rec.success("reload:admin", started)
        else:
            self.ctx.rec.failure("reload:admin", f"POST /reload answered {status}", str(answer))

    def broken_window(self):
        kind = "reload:broken_script"
        before = self.generation()
        self.ctx.policy.broke()
        self.mg.tag_path.write_text(BROKEN_PLUGIN)
        self.ctx.rec.event("broken script written", f"generation {before} must stay")
        end = time.time() + self.broken_for
        while time.time() < end and not self.ctx.stop.is_set():
            time.sleep(1.5)
            status, answer = self.mg.reload()
            generation = self.generation()
            step = (answer.get("error") or {}).get("step")
            if status == 422 and step == "compile" and generation == before:
                self.ctx.rec.failure(kind, "rejected (422), old generation kept serving", "", injected=True)
            else:
                self.ctx.rec.failure(kind, "broken script not refused",
                                     f"status {status} step {step} generation {before} -> {generation}")
        version = self.write_version()
        status, answer = self.mg.reload()
        if status != 200:
            self.ctx.rec.failure("reload:admin", f"POST /reload after the fix answered {status}", str(answer))
        self.ctx.rec.event("broken script fixed", version)

    def run(self):
        start = time.time()
        n = 0
        while not self.ctx.pause(self.every):
            try:
                if self.broken_at and time.time() - start >= self.broken_at[0]:
                    self.broken_at.pop(0)
                    self.broken_window()
                elif n % 2 == 0:
                    self.file_change()
                else:
                    self.admin_reload(n)
            except Exception as error:
                self.ctx.rec.failure("reload:admin", "admin endpoint failed: " + type(error).__name__, repr(error))
            n += 1


def start(ctx, mg, minutes, skip=()):
    """Starts the fault loop and the reloader; broken windows at 30% and 65% of the run."""
    seconds = minutes * 60
    reloader = Reloader(ctx, mg, broken_at=[0.3 * seconds, 0.65 * seconds])
    threads = [threading.Thread(target=fault_loop, args=(ctx, skip), daemon=True),
               threading.Thread(target=reloader.run, daemon=True)]
    for t in threads:
        t.start()
    return threads
