"""The admin listener runs on a thread of its own: `/ready`, `/policy`, `/metrics` and
`POST /reload` answer while a runaway script holds every proxy event loop."""
import http.client
import json
import threading
import time

import pytest

from conftest import free_port, wait_port
from helpers import config
from origin import Origin

LOOPS = 2

SPINNING = """local M = {}
function M.route(req)
  if req.path == "/spin" then
    local n = 0
    while true do n = n + 1 end
  end
  if req.path == "/version" then return moongate.respond(200, "@VERSION@") end
  return moongate.route("origin")
end
return M
"""


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def get(port, method, path, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        started = time.monotonic()
        conn.request(method, path, headers={"Host": "app.test"})
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def test_admin_answers_while_a_runaway_script_holds_every_proxy_loop(moongate, tmp_path, origin):
    plugin = tmp_path / "spin.lua"
    plugin.write_text(SPINNING.replace("@VERSION@", "v1"))
    port, admin = free_port(), free_port()
    # Each /spin holds its loop until its 3 s deadline or its billion-instruction budget ends it.
    text = config(port, [f"name: spin\nfile: {plugin}\nhook_deadline: 3s"], clusters={"origin": f"127.0.0.1:{origin.port}"},
                  admin_port=admin, policy={"watch": "false", "instruction_budget": 1000000000},
                  top={"event_loop_threads": LOOPS})
    moongate(text, port)
    wait_port(admin)
    assert get(port, "GET", "/version", 5)[:2] == (200, b"v1")

    # Runaway requests: four clients (spread over both loops), each sending two in turn, so each
    # loop is held for four runaway calls in a row.
    spins = []

    def spin():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
        try:
            for _ in range(2):
                conn.request("GET", "/spin", headers={"Host": "app.test"})
                response = conn.getresponse()
                response.read()
                spins.append(response.status)
        except (OSError, http.client.HTTPException) as error:
            spins.append(repr(error))
        finally:
            conn.close()

    threads = [threading.Thread(target=spin) for _ in range(2 * LOOPS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.5)

    # The proxy itself does not answer now: its loops are held.
    with pytest.raises((TimeoutError, OSError)):
        get(port, "GET", "/version", 1.0)

    status, body, seconds = get(admin, "GET", "/ready", 2)
    assert (status, body) == (200, b"ready\n") and seconds < 1.0, (status, body, seconds)
    status, body, seconds = get(admin, "GET", "/policy", 2)
    assert status == 200 and json.loads(body)["generation"] == 1 and seconds < 1.0
    status, body, seconds = get(admin, "GET", "/metrics", 2)
    assert status == 200 and b"moongate_policy_reloads_total" in body and seconds < 1.0

    # A new version of the script is loaded while the loops are still held.
    plugin.write_text(SPINNING.replace("@VERSION@", "v2"))
    status, body, seconds = get(admin, "POST", "/reload", 10)
    assert status == 200 and json.loads(body)["generation"] == 2, body
    status, body, _ = get(admin, "GET", "/policy", 2)
    assert json.loads(body)["generation"] == 2
    held = time.monotonic() - started
    assert any(t.is_alive() for t in threads), "the runaway requests ended before the admin checks did"

    for t in threads:
        t.join(60)
    # Every runaway request is answered, failed closed (500), under either generation.
    assert spins == [500] * (2 * len(threads)), spins
    assert get(port, "GET", "/version", 10)[:2] == (200, b"v2")
    print(f"admin answered while the proxy loops were held ({held:.1f} s into the stall)")
