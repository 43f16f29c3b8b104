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
