"""proxy_auth with an htpasswd file (`users_file`), end to end: curl --proxy-user through the built
binary; a wrong password gets 407; a changed file goes live with the next reload; `moongate
validate` refuses hashes slower than the hook deadline and warns about plain-text passwords."""
import ctypes
import json
import subprocess
import time

import pytest

from conftest import free_port, run_moongate
from helpers import config, router
from origin import Origin


def crypt(password, prefix, count=0):
    """A hash made by the C library's crypt(3) (libxcrypt), as Apache's htpasswd -B would make bcrypt."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt_rn.restype = ctypes.c_char_p
    lib.crypt_gensalt_rn.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_char_p, ctypes.c_int]
    lib.crypt_rn.restype = ctypes.c_char_p
    lib.crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    setting = ctypes.create_string_buffer(256)
    assert lib.crypt_gensalt_rn(prefix.encode(), count, None, 0, setting, 256)
    data = ctypes.create_string_buffer(65536)
    return lib.crypt_rn(password.encode(), setting.value, data, 65536).decode()


def openssl(password, method):
    """`openssl passwd -5`/`-6`: SHA-crypt from an implementation other than libcrypt."""
    return subprocess.run(["openssl", "passwd", f"-{method}", password], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def auth_entry(deadline="200ms"):
    return f"name: proxy_auth\npriority: 1\nhook_deadline: {deadline}\nconfig:\n  users_file: users.htpasswd"


def status_through(port, url, user=None):
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://127.0.0.1:{port}"]
    if user:
        args += ["--proxy-user", user]
    return subprocess.run(args + [url], capture_output=True, text=True, timeout=20).stdout


def wait_status(port, url, user, expected, timeout=10.0):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        seen = status_through(port, url, user)
        if seen == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"expected {expected}, still {seen}")


def test_curl_proxy_user_against_an_htpasswd_file_and_a_reload(moongate, origin, tmp_path):
    users = tmp_path / "users.htpasswd"
    users.write_text(f"alice:{crypt('wonderland', '$2y$', 5)}\nbob:{openssl('builder', '6')}\n")
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{origin.port}/secret"
    text = config(port, [auth_entry(), router(forward=True, forward_ports=(origin.port,),
                                              allow_addresses=(f"127.0.0.1:{origin.port}",))],
                  allowed_addresses=["127.0.0.1"], admin_port=admin)
    # The config sits next to the htpasswd file: users_file is relative to the config's folder.
    mg = moongate(text, port)
    assert status_through(port, url, "alice:wonderland") == "200"
    assert status_through(port, url, "bob:builder") == "200"
    assert status_through(port, url, "alice:builder") == "407"
    assert status_through(port, url) == "407"
    assert status_through(port, url, "carol:wonderland") == "407"
    # The upstream never sees the credentials (the sanitization floor).
    assert all("Proxy-Authorization" not in headers for _, _, headers, _ in origin.requests)

    # The file is watched like a script: a new password goes live with the reload it triggers.
    policy = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{admin}/policy"], capture_output=True,
                                       text=True, timeout=10).stdout)
    assert str(users) in {f["path"] for f in policy["files"]}
    users.write_text(f"alice:{crypt('looking-glass', '$2b$', 5)}\nbob:{openssl('builder', '5')}\n")
    wait_status(port, url, "alice:looking-glass", "200")
    assert status_through(port, url, "alice:wonderland") == "407"
    assert status_through(port, url, "bob:builder") == "200"

    # A broken file is rejected like a broken script: the running generation (and its users) stays.
    users.write_text("alice:$apr1$j0QaJQS4$ETLOdbACiWf4.s0JwScwo/\n")
    deadline = time.time() + 10
    while "MD5 ($apr1$) is not accepted" not in mg.logs() and time.time() < deadline:
        time.sleep(0.05)
    assert "MD5 ($apr1$) is not accepted" in mg.logs()
    assert "$apr1$j0QaJQS4" not in mg.logs()  # the hash itself is never logged
    assert status_through(port, url, "alice:looking-glass") == "200"


def test_validate_refuses_bcrypt_slower_than_the_hook_deadline(tmp_path):
    # A cost-4 hash relabelled cost 15: valid, and about 2,048 times as slow to verify.
    hash_ = "$2y$15$" + crypt("wonderland", "$2y$", 4)[7:]
    (tmp_path / "users.htpasswd").write_text(f"alice:{hash_}\n")
    cfg = tmp_path / "auth.yaml"
    cfg.write_text(config(free_port(), ["name: proxy_auth\nconfig:\n  users_file: users.htpasswd"]))
    result = run_moongate("validate", "--config", str(cfg))
    assert result.returncode == 1
    assert "users.htpasswd:1: a bcrypt hash (cost 15) takes about" in result.stderr
    assert "hook deadline of 10 ms: give the plugin's entry hook_deadline:" in result.stderr
    assert hash_ not in result.stderr


def test_validate_warns_about_plain_text_passwords(tmp_path):
    cfg = tmp_path / "plain.yaml"
    cfg.write_text(config(free_port(), ["name: proxy_auth\nconfig:\n  users:\n    alice: wonderland"]))
    result = run_moongate("validate", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    lines = cfg.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "users:")
    assert f"{cfg}:{line}: warning: plugin proxy_auth: passwords in plain text" in result.stderr
    (tmp_path / "users.htpasswd").write_text(f"alice:{openssl('wonderland', '6')}\n")
    cfg.write_text(config(free_port(), ["name: proxy_auth\nconfig:\n  users_file: users.htpasswd"]))
    result = run_moongate("validate", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
