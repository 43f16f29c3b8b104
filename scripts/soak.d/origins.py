"""The soak's own upstreams, all on 127.0.0.1 in this process: an HTTP/1.1 origin (downloads and
upload digests), a faulty origin (resets, stalls, half-closes, held connections), a TCP echo server
and a holding server (CONNECT targets) and a WebSocket echo origin."""
import hashlib
import http.server
import json
import socket
import socketserver
import struct
import threading
import time

from websockets.sync.server import serve as ws_serve

# Download bodies are a prefix of this repeating block, so a client can check every byte.
BLOCK = bytes(range(256)) * 256  # 64 KiB


def body_bytes(size):
    """The body of `GET /data/<size>`: `size` bytes of BLOCK repeated."""
    whole, part = divmod(size, len(BLOCK))
    return BLOCK * whole + BLOCK[:part]


class WebOrigin:
    """GET /data/<n> answers n pattern bytes; POST /echo answers the body's length and SHA-256."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60
            disable_nagle_algorithm = True   # the head and the body are separate writes

            def do_GET(self):
                if not self.path.startswith("/data/"):
                    self.send_error(404)
                    return
                size = int(self.path.split("/")[2])
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                left = size
                while left > 0:
                    n = min(left, len(BLOCK))
                    self.wfile.write(BLOCK[:n])
                    left -= n

            def do_POST(self):
                digest, length = hashlib.sha256(), 0
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        data = self.rfile.read(size)
                        if len(data) < size:
                            raise ConnectionError("chunked body cut")
                        digest.update(data)
                        length += size
                        self.rfile.readline()
                else:
                    left = int(self.headers.get("Content-Length", 0))
                    while left > 0:
                        data = self.rfile.read(min(left, 65536))
                        if not data:
                            raise ConnectionError("body cut")
                        digest.update(data)
                        length += len(data)
                        left -= len(data)
                out = json.dumps({"length": length, "sha256": digest.hexdigest()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (ConnectionError, ValueError, OSError):
                    self.close_connection = True  # a client that vanished mid-body: expected

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RawServer:
    """A loopback TCP server running `handle(conn)` per connection in a daemon thread."""

    def __init__(self, handle):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.closed = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            conn.settimeout(60)
            self.handle(conn)
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


def echo(conn):
    """Echoes bytes until EOF, then half-closes its side too."""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 65536:
            return None
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def reset(conn):
    """Closes with RST instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def wait_for_close(conn, limit=60.0):
    """Reads and drops bytes until the peer closes (or `limit` seconds pass)."""
    conn.settimeout(limit)
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            if not conn.recv(65536):
                return
        except socket.timeout:
            return


RESET_DECLARED = 1 << 20   # Content-Length announced by /fault/reset
RESET_SENT = 64 * 1024     # bytes sent before the reset
HALF_CLOSE_BODY = b"half-closed body " * 300


class Holds:
    """When the upstream side of each labelled connection opened and closed, for the faults that
    check that Moongate lets go of an upstream once its client has vanished."""

    def __init__(self):
        self.cond = threading.Condition()
        self.opened, self.closed, self.released = {}, {}, {}

    def mark(self, table, key):
        with self.cond:
            table[key] = time.time()
            self.cond.notify_all()

    def wait(self, table, key, timeout):
        """The time `key` reached `table`, or None after `timeout` s."""
        with self.cond:
            self.cond.wait_for(lambda: key in table, timeout)
            return table.get(key)


def hold(holds, conn, key):
    """Reads and drops whatever comes until the peer closes (or the soak releases `key`, having
    counted a connection Moongate kept open), then notes the close."""
    holds.mark(holds.opened, key)
    conn.settimeout(0.5)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and key not in holds.released:
            try:
                if not conn.recv(65536):
                    break
            except socket.timeout:
                pass
    except OSError:
        pass
    holds.mark(holds.closed, key)


def hold_download(holds, conn, key):
    """Sends an 8 MiB body in 64 KiB writes; notes the close when a write fails (or all is sent
    and the peer closes)."""
    holds.mark(holds.opened, key)
    try:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {128 * len(BLOCK)}\r\n\r\n".encode())
        for _ in range(128):
            conn.sendall(BLOCK)
        wait_for_close(conn, 120)
    except OSError:
        pass
    holds.mark(holds.closed, key)


def tunnel_hold(holds):
    """A CONNECT target: the first line is the key, then bytes are dropped until the peer closes."""
    def handle(conn):
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        hold(holds, conn, data.split(b"\n", 1)[0].decode("latin-1"))
    return handle


def faulty(holds, conn):
    """One request per connection; the path says which fault to play."""
    line = read_head(conn)
    if line is None:
        return
    path = line.split(" ")[1] if " " in line else ""
    if path.startswith("/fault/hold-download/"):
        hold_download(holds, conn, path.rsplit("/", 1)[1])
    elif path.startswith("/fault/hold/"):
        hold(holds, conn, path.rsplit("/", 1)[1])
    elif path.startswith("/fault/reset-before-head"):
        reset(conn)
    elif path.startswith("/fault/reset-chunked"):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + f"{RESET_SENT:x}\r\n".encode() + BLOCK[:RESET_SENT] + b"\r\n")
        time.sleep(0.05)
        reset(conn)
    elif path.startswith("/fault/reset-close-delimited"):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BLOCK[:RESET_SENT])
        time.sleep(0.05)
        reset(conn)
    elif path.startswith("/fault/half-close-short"):
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {RESET_DECLARED}\r\n\r\n".encode() + HALF_CLOSE_BODY)
        conn.shutdown(socket.SHUT_WR)
        wait_for_close(conn, 30)
    elif path.startswith("/fault/reset"):
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {RESET_DECLARED}\r\n\r\n".encode() + BLOCK[:RESET_SENT])
        time.sleep(0.05)
        reset(conn)
    elif path.startswith("/fault/stall"):
        wait_for_close(conn)  # never answers: the proxy's upstream_response timeout must fire
    elif path.startswith("/fault/half-close"):
        # close-delimited body, then FIN on our side only; the read side stays open
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + HALF_CLOSE_BODY)
        conn.shutdown(socket.SHUT_WR)
        wait_for_close(conn, 30)
    else:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class WebSocketOrigin:
    """Echoes every message back unchanged."""

    def __init__(self):
        def handler(ws):
            for message in ws:
                ws.send(message)

        self.server = ws_serve(handler, "127.0.0.1", 0, max_size=1 << 20)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Origins:
    """All the upstreams, started together."""

    def __init__(self):
        self.holds = Holds()
        self.web = WebOrigin()
        self.faulty = RawServer(lambda conn: faulty(self.holds, conn))
        self.echo = RawServer(echo)
        self.tunnel_hold = RawServer(tunnel_hold(self.holds))
        self.ws = WebSocketOrigin()

    def close(self):
        for server in (self.web, self.faulty, self.echo, self.tunnel_hold, self.ws):
            try:
                server.close()
            except Exception:
                pass
