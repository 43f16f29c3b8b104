"""A small HTTP/1.1 origin for the end-to-end tests: reflects what it receives, counts connections."""
import http.server
import json
import socketserver
import threading


class Origin:
    def __init__(self):
        origin = self
        self.connections = 0
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                origin.connections += 1
                super().setup()

            def _reply(self, body_in=b""):
                origin.requests.append((self.command, self.path, dict(self.headers), body_in))
                if self.path.startswith("/big/"):
                    size = int(self.path.split("/")[2])
                    self.send_response(200)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    chunk = b"x" * 65536
                    left = size
                    while left > 0:
                        n = min(left, len(chunk))
                        self.wfile.write(chunk[:n])
                        left -= n
                    return
                body = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body_length": len(body_in)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Server", "origin/1.0")
                self.send_header("Keep-Alive", "timeout=5")
                if self.path.startswith("/hop"):
                    # hop-by-hop fields, and one the Connection header names: none may reach the client
                    self.send_header("Connection", "keep-alive, X-Origin-Secret")
                    self.send_header("X-Origin-Secret", "1")
                    self.send_header("Proxy-Authenticate", "Basic")
                    self.send_header("Trailer", "X-Sum")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._reply()

            def do_POST(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        data += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reply(data)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class RecordingOrigin:
    """A raw HTTP/1.1 origin that records every byte each connection sends it, in order of
    connection, and answers each complete request it reads (Content-Length or chunked bodies) with
    `respond(method, path, headers, body, conn)`, which returns the bytes to send (it may send
    some itself first, or sleep). Nothing is parsed leniently: what it records is what arrived."""

    def __init__(self, respond=None):
        import socket
        self.respond = respond or RecordingOrigin.ok
        self.connections = []  # one bytearray per accepted connection
        self.requests = []  # (method, path) of every request answered
        self.ended = 0  # connections that have ended (the peer closed, or an answer failed)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def ok(method, path, headers, body, conn):
        payload = path.encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)

    def received(self):
        """Every byte received, all connections together, in order of connection."""
        return b"".join(bytes(c) for c in self.connections)

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            record = bytearray()
            self.connections.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn, record):
        buffered = bytearray()

        def need(predicate):
            while not predicate():
                data = conn.recv(65536)
                if not data:
                    raise EOFError
                record.extend(data)
                buffered.extend(data)

        try:
            conn.settimeout(30)
            while True:
                need(lambda: b"\r\n\r\n" in buffered)
                end = buffered.index(b"\r\n\r\n") + 4
                head = bytes(buffered[:end]).decode("latin-1")
                del buffered[:end]
                lines = head.split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = bytearray()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        need(lambda: b"\r\n" in buffered)
                        line_end = buffered.index(b"\r\n")
                        size = int(bytes(buffered[:line_end]).split(b";")[0], 16)
                        del buffered[:line_end + 2]
                        if size == 0:
                            need(lambda: b"\r\n" in buffered)
                            del buffered[:buffered.index(b"\r\n") + 2]
                            break
                        need(lambda: len(buffered) >= size + 2)
                        body += buffered[:size]
                        del buffered[:size + 2]
                else:
                    length = int(headers.get("content-length", "0"))
                    need(lambda: len(buffered) >= length)
                    body += buffered[:length]
                    del buffered[:length]
                self.requests.append((method, path))
                answer = self.respond(method, path, headers, bytes(body), conn)
                if answer:
                    conn.sendall(answer)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            conn.close()
            self.ended += 1

    def close(self):
        self.closed = True
        self.sock.close()
