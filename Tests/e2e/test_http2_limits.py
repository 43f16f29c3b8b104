"""HTTP/2 listener settings (`http2:` in the config, hardening.md §1.5's edge defaults), the stream
idle timeout (`timeouts.stream_idle`), graceful shutdown (GOAWAY, then the streams in flight drain),
and pooled upstream connections for HTTP/2 streams. Real clients: python h2 over loopback."""
import re
import signal
import socket
import subprocess
import threading
import time

import h2.events
import h2.settings
import pytest

from conftest import free_port, recv_head, run_moongate
from origin import Origin
from test_http2 import PLUGIN, H2Client, Target, echo_until_eof

S = h2.settings.SettingCodes


def config(port, origin_port, plugin, http2="", timeouts=""):
    return f"""listeners:
  - name: main
    address: 127.0.0.1
    port: {port}
    protocols: [http1, http2]
clusters:
  - name: origin
    endpoints: ["127.0.0.1:{origin_port}"]
policy:
  watch: false
  plugins:
    - name: gate
      file: {plugin}
{http2}{timeouts}"""


class Client(H2Client):
    """H2Client that also keeps GOAWAY's error code and last stream id, and reset codes."""

    def __init__(self, port):
        super().__init__(port)
        self.goaway_code = None
        self.goaway_last = None
        self.reset_codes = {}
        self.events = []

    def saw(self, event):
        self.events.append(event)
        if isinstance(event, h2.events.StreamReset):
            self.reset_codes[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_code = event.error_code
            self.goaway_last = event.last_stream_id

    def settle(self, seconds=0.3):
        """Reads what arrives for a moment (the server's SETTINGS and window update)."""
        try:
            self.pump(lambda: False, timeout=seconds)
        except TimeoutError:
            pass


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "gate.lua"
    path.write_text(PLUGIN)
    return path


@pytest.fixture
def origin():
    made = Origin()
    yield made
    made.close()


def test_default_settings_are_the_edge_profile(moongate, plugin, origin):
    port = free_port()
    moongate(config(port, origin.port, plugin), port)
    client = Client(port)
    try:
        client.settle()
        remote = client.conn.remote_settings
        assert remote[S.MAX_CONCURRENT_STREAMS] == 100
        assert remote[S.INITIAL_WINDOW_SIZE] == 65536
        assert remote[S.MAX_FRAME_SIZE] == 16384
        assert remote[S.MAX_HEADER_LIST_SIZE] == 60 * 1024  # limits.max_header_bytes
        assert remote[S.ENABLE_CONNECT_PROTOCOL] == 1  # CX-EXT-1
        assert client.conn.outbound_flow_control_window == 1 << 20
    finally:
        client.close()


def test_advertised_settings_match_the_config(moongate, plugin, origin):
    port = free_port()
    http2 = """http2:
  max_concurrent_streams: 37
  initial_stream_window: 100000
  initial_connection_window: 2MiB
  max_frame_size: 32KiB
  max_header_list_size: 20KiB
"""
    moongate(config(port, origin.port, plugin, http2=http2), port)
    client = Client(port)
    try:
        client.settle()
        remote = client.conn.remote_settings
        assert remote[S.MAX_CONCURRENT_STREAMS] == 37
        assert remote[S.INITIAL_WINDOW_SIZE] == 100000
        assert remote[S.MAX_FRAME_SIZE] == 32 * 1024
        assert remote[S.MAX_HEADER_LIST_SIZE] == 20 * 1024
        assert client.conn.outbound_flow_control_window == 2 << 20
        # The stream window is honoured: a 100,000-byte body goes in without waiting for an update.
        sid = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/w"),
                              ("content-length", "100000")], end_stream=False)
        assert client.conn.local_flow_control_window(sid) == 100000
        for offset in range(0, 100000, 25000):  # frames of up to 32 KiB are allowed
            client.send(sid, b"x" * 25000, end_stream=offset + 25000 == 100000)
        client.pump(lambda: sid in client.ended)
        assert client.status[sid] == 200
        assert origin.requests[-1][3] == b"x" * 100000
    finally:
        client.close()


@pytest.mark.parametrize("entry,message", [
    ("max_frame_size: 1000", "out of range"),
    ("initial_stream_window: 4GiB", "out of range"),
    ("max_concurent_streams: 5", "unknown key 'max_concurent_streams'"),
    ("max_concurrent_streams: many", "expected an integer"),
])
def test_bad_http2_settings_are_errors_with_file_and_line(tmp_path, plugin, entry, message):
    path = tmp_path / "bad.yaml"
    text = config(free_port(), 1, plugin, http2=f"http2:\n  {entry}\n")
    path.write_text(text)
    line = text.splitlines().index(f"  {entry}") + 1
    run = run_moongate("validate", "--config", str(path))
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert message in out
    assert f"{path}:{line}:" in out  # the line of the bad entry


def test_an_idle_stream_is_reset_and_the_connection_goes_on(moongate, plugin, origin):
    port = free_port()
    moongate(config(port, origin.port, plugin, timeouts="timeouts:\n  stream_idle: 1s\n"), port)
    client = Client(port)
    try:
        # A request whose body never comes: no frame either way after the HEADERS.
        stalled = client.request([(":method", "POST"), (":scheme", "http"), (":authority", "a.test"), (":path", "/idle")],
                                 end_stream=False)
        started = time.time()
        client.pump(lambda: stalled in client.reset, timeout=8)
        waited = time.time() - started
        assert 0.8 <= waited <= 4, waited
        assert client.reset_codes[stalled] == 8  # CANCEL
        assert not client.goaway
        fresh = client.get("/after-idle")
        client.pump(lambda: fresh in client.ended)
        assert client.status[fresh] == 200
    finally:
        client.close()


def test_cx_idle_1_2_and_4_traffic_keeps_a_tunnel_stream_alive_and_idleness_resets_it(moongate, plugin, origin):
    port = free_port()
    target = Target(echo_until_eof)
    moongate(config(port, origin.port, plugin, timeouts="timeouts:\n  stream_idle: 1s\n"), port)
    client = Client(port)
    try:
        busy = client.connect(f"127.0.0.1:{target.port}")
        quiet = client.connect(f"127.0.0.1:{target.port}")
        client.pump(lambda: {busy, quiet} <= set(client.status))
        sent = b""
        for i in range(6):  # 2.4 s of traffic, every 0.4 s: never idle for 1 s
            piece = f"tick {i};".encode()
            sent += piece
            client.send(busy, piece)
            client.pump(lambda: client.data[busy] == sent, timeout=5)
            time.sleep(0.4)
        assert busy not in client.reset
        assert quiet in client.reset  # CX-IDLE-1: idle after the 200, the stream is reset
        assert not client.goaway  # CX-IDLE-4: per stream, the connection survives
    finally:
        client.close()
        target.close()


def slow_answer(server, conn):
    """An origin that answers `slow!` 1.5 s after the request head (a stream in flight)."""
    recv_head(conn)
    time.sleep(1.5)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow!")
    time.sleep(1)


def test_graceful_shutdown_sends_goaway_and_drains_the_streams_in_flight(moongate, plugin, servers):
    slow_origin = servers(slow_answer)
    port = free_port()
    mg = moongate(config(port, slow_origin.port, plugin), port)
    # nghttp, since python h2 treats any GOAWAY as the end of the connection.
    run = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{port}/slow"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)  # the request is with the origin
        mg.proc.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=15)
    finally:
        if run.poll() is None:
            run.kill()
    goaways = re.findall(r"recv GOAWAY frame .*\n\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
    # RFC 9113 §6.8: first a GOAWAY that refuses nothing yet, then one naming the last stream served.
    assert goaways[0] == ("2147483647", "NO_ERROR"), out
    stream = re.search(r"recv \(stream_id=(\d+)\) :status: 200", out)
    assert stream and stream.start() > out.index("recv GOAWAY frame"), out  # answered after the GOAWAY
    assert goaways[-1] == (stream.group(1), "NO_ERROR"), out
    assert "slow!" in out
    assert run.returncode == 0
    assert mg.proc.wait(timeout=10) == 0


def test_warm_pooled_upstreams_answer_fifty_concurrent_streams(moongate, plugin, origin):
    # The repro of the lost answers once seen with pooled upstreams: 50 sequential requests warm
    # the pool, then 50 at once on the same connection; every one is answered, over reused connections.
    port = free_port()
    moongate(config(port, origin.port, plugin), port)
    client = Client(port)
    try:
        for i in range(50):
            sid = client.get(f"/s{i}")
            client.pump(lambda: sid in client.ended)
            assert client.status[sid] == 200
        assert origin.connections <= 2  # one connection, reused (pooled)
        streams = [client.get(f"/c{i}") for i in range(50)]
        client.pump(lambda: all(s in client.ended for s in streams), timeout=30)
        assert all(client.status[s] == 200 for s in streams)
        assert len(origin.requests) == 100
        assert origin.connections <= 51
    finally:
        client.close()


def test_terminate_http2_connect_config(moongate, tmp_path):
    """configs/terminate_http2_connect.yaml as shipped (ports moved): CX-H2-1 over an HTTP/2-only
    listener, CX-H2-4 bytestream, CX-DIS-4 for a target it does not list, CX-EXT-1 and its settings."""
    from test_configs import adapt

    target = Target(echo_until_eof)
    port = free_port()
    text = adapt("terminate_http2_connect.yaml", tmp_path, {10001: port, 10443: target.port, 9902: free_port()})
    moongate(text, port)
    client = Client(port)
    try:
        client.settle()
        assert client.conn.remote_settings[S.MAX_CONCURRENT_STREAMS] == 100
        assert client.conn.remote_settings[S.ENABLE_CONNECT_PROTOCOL] == 1
        classic = client.connect(f"127.0.0.1:{target.port}")
        extended = client.request([(":method", "CONNECT"), (":protocol", "bytestream"), (":scheme", "https"),
                                   (":path", "/"), (":authority", f"127.0.0.1:{target.port}")], end_stream=False)
        refused = client.connect("127.0.0.1:22")
        client.pump(lambda: {classic, extended, refused} <= set(client.status))
        assert client.status[classic] == 200 and client.status[extended] == 200
        assert client.status[refused] == 403
        client.send(classic, b"one", end_stream=True)
        client.send(extended, b"two", end_stream=True)
        client.pump(lambda: {classic, extended} <= client.ended)
        assert client.data[classic] == b"onebye" and client.data[extended] == b"twobye"
    finally:
        client.close()
        target.close()
    # HTTP/1.1 is not spoken on this listener.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    assert not s.recv(100).startswith(b"HTTP/1.1 200")


def test_a_reload_that_changes_the_http2_settings_drains_open_connections(moongate, plugin, servers):
    """GOAWAY with a drain on reload of listener settings: a connection opened with the old
    `http2:` settings gets GOAWAY (NO_ERROR), its stream in flight is still answered, and the
    client's next connection is told the new settings. A reload that leaves them alone drains
    nothing."""
    slow_origin = servers(slow_answer)
    port = free_port()
    mg = moongate(config(port, slow_origin.port, plugin, http2="http2:\n  max_concurrent_streams: 100\n"), port)
    run = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{port}/slow"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)  # the request is with the origin
        mg.config.write_text(config(port, slow_origin.port, plugin, http2="http2:\n  max_concurrent_streams: 50\n"))
        mg.proc.send_signal(signal.SIGHUP)
        out, _ = run.communicate(timeout=15)
    finally:
        if run.poll() is None:
            run.kill()
    goaways = re.findall(r"recv GOAWAY frame .*\n\s*\(last_stream_id=(\d+), error_code=(\w+)", out)
    assert goaways and goaways[0] == ("2147483647", "NO_ERROR"), out
    stream = re.search(r"recv \(stream_id=(\d+)\) :status: 200", out)
    assert stream and stream.start() > out.index("recv GOAWAY frame"), out  # answered after the GOAWAY
    assert "slow!" in out and run.returncode == 0
    # The next connection has the new settings; a reload that changes other things leaves it open.
    client = Client(port)
    try:
        client.settle()
        assert client.conn.remote_settings[S.MAX_CONCURRENT_STREAMS] == 50
        mg.config.write_text(config(port, slow_origin.port, plugin, http2="http2:\n  max_concurrent_streams: 50\n",
                                    timeouts="timeouts:\n  upstream_response: 20s\n"))
        mg.proc.send_signal(signal.SIGHUP)
        client.settle(1.0)
        assert client.goaway_code is None
        assert mg.logs().count("policy reloaded") == 2, mg.logs()  # both reloads went live
    finally:
        client.close()


def test_extended_connect_can_be_turned_off(moongate, plugin, origin):
    """`http2.extended_connect: false`: SETTINGS_ENABLE_CONNECT_PROTOCOL is not advertised, and a
    stream that sends `:protocol` anyway is reset (a malformed request, RFC 8441 §3), while the
    connection goes on serving."""
    port = free_port()
    moongate(config(port, origin.port, plugin, http2="http2:\n  extended_connect: false\n"), port)
    client = Client(port)
    try:
        client.settle()
        assert client.conn.remote_settings.enable_connect_protocol in (None, 0)
        # python h2 refuses to send :protocol itself without the setting: pretend it was advertised.
        client.conn.remote_settings._settings[S.ENABLE_CONNECT_PROTOCOL] = [1]
        sid = client.request([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":path", "/chat"),
                              (":authority", f"127.0.0.1:{port}")], end_stream=False)
        client.pump(lambda: sid in client.reset or client.goaway_code is not None)
        assert sid in client.reset and client.goaway_code is None
        after = client.get("/after")
        client.pump(lambda: after in client.ended)
        assert client.status[after] == 200
    finally:
        client.close()


def test_tunnel_timeouts_hold_for_connect_streams_as_for_http1_tunnels(moongate, plugin, origin):
    """`timeouts.tunnel_idle` ends an idle CONNECT stream (its target is closed, the stream gets
    END_STREAM) and `timeouts.tunnel_max_duration` resets a busy one; the connection goes on."""
    port = free_port()
    target = Target(echo_until_eof)
    moongate(config(port, origin.port, plugin, timeouts="timeouts:\n  tunnel_idle: 1s\n  tunnel_max_duration: 3s\n"), port)
    client = Client(port)
    try:
        busy = client.connect(f"127.0.0.1:{target.port}")
        quiet = client.connect(f"127.0.0.1:{target.port}")
        client.pump(lambda: {busy, quiet} <= set(client.status))
        started = time.time()
        sent = b""
        quiet_end = None
        while busy not in client.reset and time.time() - started < 8:
            piece = b"tick;"
            sent += piece
            client.send(busy, piece)
            client.pump(lambda: client.data[busy] == sent or busy in client.reset, timeout=5)
            if quiet_end is None and quiet in client.ended:
                # Idle: ended cleanly (END_STREAM, like a FIN), not reset.
                quiet_end = (time.time() - started, quiet in client.reset)
            time.sleep(0.3)
        lived = time.time() - started
        assert quiet_end is not None and 0.8 <= quiet_end[0] <= 2.5 and not quiet_end[1], quiet_end
        assert busy in client.reset and 2.5 <= lived <= 5, lived  # the maximum duration, despite traffic
        assert not client.goaway
        fresh = client.get("/after")
        client.pump(lambda: fresh in client.ended)
        assert client.status[fresh] == 200
    finally:
        client.close()
        target.close()
