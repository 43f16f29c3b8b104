"""HTTP/2 streams answered before the client has sent its whole request body: the answer arrives,
and a client that goes on uploading is not left waiting for credit until `stream_idle` ends the
stream, even when its upload had been held back because the upstream could not take more."""
import socket
import threading
import time

from conftest import ThreadedServer, free_port
from test_http2 import H2Client, h2_config

PLUGIN = """
local M = {}
function M.route(req) return moongate.route("origin") end
return M
"""


def test_an_upload_held_back_then_answered_locally_gets_credit_again(moongate, tmp_path):
    """The origin reads nothing, so Moongate stops crediting the stream (its upload stalls at the
    window), then the origin drops the connection: Moongate answers 502 itself. The client, which
    still has body to send, must get credit again right away (the rest is taken and dropped), not
    stall until `stream_idle` (30 s here) resets the stream."""
    dropped = threading.Event()

    def reads_nothing_then_drops(server, conn):
        time.sleep(2.0)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # unread data and linger 0: a reset
        dropped.set()

    origin = ThreadedServer(reads_nothing_then_drops)
    plugin = tmp_path / "route.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    moongate(h2_config(port, origin.port, plugin) + "timeouts:\n  stream_idle: 30s\n", port)
    client = H2Client(port)
    try:
        total = 64 << 20
        payload = memoryview(b"x" * total)
        sid = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/up")],
                             end_stream=False)
        client.sock.settimeout(0.05)
        sent = client.upload(sid, payload, 0, 1.5, end=True)
        stalled_at = sent
        assert stalled_at < 32 << 20, "the origin read nothing, yet the upload was never held back"
        sent = client.upload(sid, payload, sent, 10, until=lambda: sid in client.status, end=True)
        assert client.status.get(sid) == 502, client.status
        assert dropped.is_set()
        # The rest of the body goes in a few seconds, far inside stream_idle.
        answered_at = sent
        sent = client.upload(sid, payload, sent, 15, end=True)
        assert sid not in client.reset, "the stream was reset instead of taking the rest of the body"
        assert sent == total, f"upload stalled after the 502: {sent - answered_at} bytes taken since"
    finally:
        client.close()
        origin.close()


def test_an_http2_upstream_answering_before_the_body_ends_frees_both_streams(moongate, tmp_path):
    """An HTTP/2 origin answers on the request's HEADERS, before its body ends. The client gets the
    whole answer; Moongate lets go of the upstream stream at once (the origin sees it reset), so it
    does not hold one of the origin's concurrent streams; and the client's stream, half open on its
    side and then silent, is reset once `stream_idle` passes, like any idle stream."""
    from test_http2_upstream import H2Origin
    origin = H2Origin(early=True)
    plugin = tmp_path / "route.lua"
    plugin.write_text(PLUGIN)
    port = free_port()
    moongate(f"""listeners:
  - {{ name: main, address: 127.0.0.1, port: {port}, protocols: [http1, http2] }}
clusters:
  - {{ name: origin, endpoints: ["127.0.0.1:{origin.port}"], protocol: http2 }}
timeouts:
  stream_idle: 2s
policy:
  watch: false
  plugins:
    - {{ name: route, file: {plugin} }}
""", port)
    client = H2Client(port)
    try:
        sid = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/up")],
                             end_stream=False)
        client.send(sid, b"x" * 1000)
        client.pump(lambda: sid in client.ended, timeout=10)
        assert client.status[sid] == 200
        assert client.data[sid] == b"origin /up"
        deadline = time.time() + 5
        while origin.resets == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert origin.resets == 1, "the upstream stream was left half open"
        started = time.time()
        client.pump(lambda: sid in client.reset, timeout=10)
        assert time.time() - started < 6
    finally:
        client.close()
        origin.close()
