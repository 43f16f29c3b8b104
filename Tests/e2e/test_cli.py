"""`moongate validate` and `moongate decide`, run as an operator would."""
import pathlib
import textwrap

from conftest import PLUGINS, ROOT, run_moongate


def write_config(tmp_path, plugin_source, extra=""):
    (tmp_path / "p.lua").write_text(plugin_source)
    config = tmp_path / "moongate.yaml"
    config.write_text(
        "listeners:\n"
        "  - name: main\n"
        "    address: 127.0.0.1\n"
        "    port: 3128\n"
        "policy:\n"
        "  plugins:\n"
        "    - name: p\n"
        "      file: p.lua\n" + extra)
    return config


def test_validate_default_config_passes():
    result = run_moongate("validate", "--config", "configs/default.yaml")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "tests passed" in result.stdout


def test_validate_every_shipped_config_passes():
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        result = run_moongate("validate", "--config", str(config))
        assert result.returncode == 0, f"{config}: {result.stderr}"


def test_validate_reports_a_syntax_error_with_file_and_line(tmp_path):
    config = write_config(tmp_path, "local M = {}\nfunction M.route(req)\n  return (\nend\nreturn M\n")
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    assert f"{tmp_path}/p.lua:4:" in result.stderr
    assert "[compile]" in result.stderr
    assert "configuration test failed" in result.stderr


def test_validate_reports_a_failing_plugin_test_by_name(tmp_path):
    config = write_config(tmp_path, textwrap.dedent("""\
        return {
          connect = function(req) return moongate.tunnel() end,
          tests = { { name = "port 25 is refused", request = "CONNECT mail.test:25", expect = "deny 403" } },
        }
        """))
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    assert "test 'port 25 is refused'" in result.stderr
    assert "expected 'deny 403', got 'tunnel'" in result.stderr


def test_validate_reports_an_unknown_key_with_its_line_and_path(tmp_path):
    config = write_config(tmp_path, "return {}", extra="timeouts:\n  upstream_conect: 5s\n")
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}:10: timeouts.upstream_conect: unknown key 'upstream_conect'" in result.stderr


def test_validate_reports_a_missing_script(tmp_path):
    config = write_config(tmp_path, "return {}")
    (tmp_path / "p.lua").unlink()
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    assert "p.lua" in result.stderr and "[read]" in result.stderr


def test_decide_shows_the_decision_and_the_plugin():
    result = run_moongate("decide", "--config", "configs/default.yaml", "--request", "CONNECT example.org:443")
    assert result.returncode == 0, result.stderr
    assert "decision: tunnel" in result.stdout
    assert "plugin:   connect_allowlist" in result.stdout


def test_decide_shows_the_default_deny_for_other_ports():
    result = run_moongate("decide", "--request", "CONNECT example.org:25")
    assert "decision: deny 403" in result.stdout
    assert "plugin:   (default)" in result.stdout


def test_decide_shows_header_edits_and_the_floor():
    result = run_moongate("decide", "--request", "GET http://example.org/ HTTP/1.1",
                          "--header", "Connection: x-secret", "--header", "X-Secret: 1", "--client", "203.0.113.4")
    assert "decision: forward" in result.stdout
    assert "set x-forwarded-for: 203.0.113.4" in result.stdout
    assert "x-secret" not in result.stdout.split("upstream headers:")[1].lower()


def test_decide_rejects_a_malformed_request():
    result = run_moongate("decide", "--request", "CONNECT example.org")
    assert result.returncode == 1
    assert "CONNECT needs an authority-form target host:port" in result.stderr


def line_of(path, text):
    """The 1-based line of the first line of a file containing `text`."""
    for number, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} is not in {path}")


def test_validate_reports_every_failure_with_its_file_and_line_then_counts(tmp_path):
    (tmp_path / "p.lua").write_text(textwrap.dedent("""\
        local M = {}
        function M.connect(req) return moongate.tunnel() end
        M.tests = {
          { name = "passes", request = "CONNECT a.test:443", expect = "tunnel" },
          { name = "first failure", request = "CONNECT a.test:443", expect = "deny 403" },
          {
            name = "second failure", request = "CONNECT a.test:25", expect = "none" },
          { name = "misspelt key", request = "CONNECT a.test:443", clinet = "203.0.113.9", expect = "tunnel" },
        }
        return M
        """))
    (tmp_path / "broken.lua").write_text("local M = {}\nfunction M.route(req)\n  return (\nend\nreturn M\n")
    (tmp_path / "recorded.jsonl").write_text(
        '{"request": "CONNECT a.test:443", "expect": "tunnel"}\n'
        '{"request": "CONNECT a.test:443" "expect": "tunnel"}\n'
        '# a comment\n'
        '{"request": "CONNECT a.test:443", "expect_plugn": "p", "expect": "tunnel"}\n')
    config = tmp_path / "moongate.yaml"
    config.write_text(
        "listeners:\n"
        "  - { name: main, address: 127.0.0.1, port: 3128 }\n"
        "policy:\n"
        "  fixtures: [recorded.jsonl]\n"
        "  plugins:\n"
        "    - { name: p, file: p.lua }\n"
        "    - { name: broken, file: broken.lua }\n")
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    err = result.stderr
    lines = err.splitlines()
    expected = [
        f"{tmp_path}/broken.lua:4: [compile] plugin broken: ",
        f"{tmp_path}/p.lua:5: [test] plugin p, test 'first failure': expected 'deny 403', got 'tunnel'",
        f"{tmp_path}/p.lua:6: [test] plugin p, test 'second failure': expected 'none', got 'tunnel'",
        f"{tmp_path}/p.lua:8: [test] plugin p, test 'misspelt key': unknown key 'clinet' (did you mean 'client'?",
        f"{tmp_path}/recorded.jsonl:2: [fixture] test 'line 2': invalid JSON at column 34: expected ',' or '}}'",
        f"{tmp_path}/recorded.jsonl:4: [fixture] test 'line 4': unknown key 'expect_plugn' (did you mean 'expect_plugin'?",
    ]
    for prefix in expected:
        assert any(line.startswith(prefix) for line in lines), f"{prefix!r} not in:\n{err}"
    assert lines[-1] == (f"{config}: configuration test failed: 6 problems: 1 of 2 plugins did not load, "
                         "5 of 6 tests failed, fixtures not replayed"), err


def test_validate_rejects_a_misspelt_cluster_with_the_plugin_file_and_line(tmp_path):
    config = tmp_path / "moongate.yaml"
    config.write_text(textwrap.dedent(f"""\
        listeners:
          - {{ name: main, address: 127.0.0.1, port: 8080 }}
        clusters:
          - {{ name: api, endpoints: ["127.0.0.1:9001"] }}
          - {{ name: web, endpoints: ["127.0.0.1:9002"] }}
        policy:
          plugins_dir: {PLUGINS}
          plugins:
            - name: host_router
              config:
                routes:
                  - {{ host: "api.example.com", cluster: api }}
                  - {{ host: "*.example.com", cluster: wbe }}
        """))
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    line = line_of(f"{PLUGINS}/host_router.lua", "unknown cluster '\" .. r.cluster")
    assert (f"{PLUGINS}/host_router.lua:{line}: [init] plugin host_router: host_router.lua:{line}: "
            "host_router: routes[2]: unknown cluster 'wbe' (clusters: api, web)") in result.stderr
    assert "configuration test failed: 1 problem: 1 of 1 plugins did not load" in result.stderr


def test_validate_rejects_a_tunnel_via_a_misspelt_cluster(tmp_path):
    config = tmp_path / "moongate.yaml"
    config.write_text(textwrap.dedent(f"""\
        listeners:
          - {{ name: main, address: 127.0.0.1, port: 8080 }}
        clusters:
          - {{ name: parent, endpoints: ["127.0.0.1:9001"] }}
        policy:
          plugins_dir: {PLUGINS}
          plugins:
            - {{ name: connect_allowlist, config: {{ allow: ["*"], via: parnet }} }}
        """))
    result = run_moongate("validate", "--config", str(config))
    assert result.returncode == 1
    assert f"{PLUGINS}/connect_allowlist.lua:" in result.stderr
    assert "via: unknown cluster 'parnet' (clusters: parent)" in result.stderr


def test_validate_rejects_connect_allowlist_without_allow_and_wildcard_addresses(tmp_path):
    for config_text, message in [
        ("{ allow_addresses: ['127.0.0.1:8443'] }", """allow is required (write allow = ["*"] to allow any public host)"""),
        ("{ allow: ['*'], allow_addresses: ['*'] }", "wildcards are not allowed here"),
        ("{ allow: ['*'], allow_addresses: ['127.0.0.1'] }", "needs a port"),
    ]:
        config = tmp_path / "moongate.yaml"
        config.write_text(
            "listeners:\n  - { name: main, address: 127.0.0.1, port: 3128 }\n"
            f"policy:\n  plugins_dir: {PLUGINS}\n  plugins:\n    - {{ name: connect_allowlist, config: {config_text} }}\n")
        result = run_moongate("validate", "--config", str(config))
        assert result.returncode == 1, config_text
        assert f"{PLUGINS}/connect_allowlist.lua:" in result.stderr and message in result.stderr, result.stderr


def test_decide_sends_script_log_lines_to_stderr_with_plugin_file_and_line(tmp_path):
    config = write_config(tmp_path, textwrap.dedent("""\
        return { route = function(req)
          moongate.log("info", "deciding", { host = req.host, n = 2 })
          print("debug line", 42)
          return moongate.respond(200, "ok")
        end }
        """))
    result = run_moongate("decide", "--config", str(config), "--request", "GET /x", "--header", "Host: a.test",
                          "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    assert "decision: respond 200" in result.stdout
    assert "deciding" not in result.stdout
    info = next(line for line in result.stderr.splitlines() if "deciding" in line)
    for part in ["info", "moongate.script", "plugin=p", f"file={tmp_path}/p.lua", "line=2", "host=a.test", "n=2"]:
        assert part in info, info
    debug = next(line for line in result.stderr.splitlines() if "debug line\t42" in line)
    assert "line=3" in debug
    quiet = run_moongate("decide", "--config", str(config), "--request", "GET /x", "--header", "Host: a.test")
    assert "deciding" in quiet.stderr and "debug line" not in quiet.stderr
