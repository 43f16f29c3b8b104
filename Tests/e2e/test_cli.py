"""`moongate validate` and `moongate decide`, run as an operator would."""
import textwrap

from conftest import ROOT, run_moongate


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
