import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Test cases and fixtures are checked, with file and line")
struct TestCaseValidationTests {
    private func spec(_ source: String, fixtures: [FixtureSource] = [], clusters: [String] = []) -> PolicySpec {
        PolicySpec(
            plugins: [PluginSource(name: "p", path: "plugins/p.lua", source: source)], fixtures: fixtures, clusters: clusters)
    }

    private func results(_ source: String, fixtures: [FixtureSource] = []) throws -> [CaseResult] {
        try ScriptHarness(spec: spec(source, fixtures: fixtures)).runPluginTests()
    }

    @Test("an unknown key in a plugin test names the key, a suggestion, the file and the line the case starts on")
    func unknownKeyInPluginTest() throws {
        let found = try results("""
            local M = {}
            function M.connect(req) return moongate.tunnel() end
            M.tests = {
              { name = "fine", request = "CONNECT a.test:443", expect = "tunnel" },
              { name = "typo", request = "CONNECT a.test:443", clinet = "203.0.113.9", expect = "tunnel" },
              {
                name = "multi-line",
                request = "CONNECT a.test:443", expect_plugn = "p", expect = "tunnel" },
            }
            return M
            """)
        #expect(found.map(\.name) == ["fine", "typo", "multi-line"])
        #expect(found[0].passed)
        #expect(found[1].file == "plugins/p.lua")
        #expect(found[1].line == 5)
        #expect(found[1].failure?.hasPrefix("unknown key 'clinet' (did you mean 'client'?") == true, "\(found[1])")
        #expect(found[2].line == 6)
        #expect(found[2].failure?.hasPrefix("unknown key 'expect_plugn' (did you mean 'expect_plugin'?") == true)
        let error = try #require(found[1].loadError)
        #expect("\(error)".hasPrefix("plugins/p.lua:5: [test] plugin p, test 'typo': unknown key 'clinet'"))
    }

    @Test("case lines are found past comments, strings and long brackets", arguments: [
        // (source of the tests table, the expected line of each case)
        ("""
        M.tests = { -- { not a case
          { name = "a", request = "CONNECT a.test:443", expect = "tunnel" }, { name = "b",
            request = "CONNECT a.test:443", expect = "tunnel" },
          --[[ { a commented-out case },
          ]]
          { name = "c}{", request = [==[CONNECT a.test:443]==], headers = { ["x-y"] = "}" }, expect = "tunnel" };
          {
            name = "d", request = "CONNECT a.test:443", expect = "tunnel" },
        }
        """, [4, 4, 8, 9]),
        ("""
        local tests = nil
        M.tests = {}
        M.tests = {

          { name = 'e\\'s', request = "CONNECT a.test:443", expect = "tunnel" } }
        """, [7]),
    ])
    func caseLines(table: String, lines: [Int]) throws {
        let source = "local M = {}\nfunction M.connect(req) return moongate.tunnel() end\n" + table + "\nreturn M\n"
        let found = try results(source)
        #expect(found.map(\.line) == lines.map { Optional($0) }, "\(found)")
        #expect(found.allSatisfy { $0.passed })
    }

    @Test("tests built in a loop get no line but still run")
    func loopBuiltTests() throws {
        let found = try results("""
            local M = { connect = function(req) return moongate.tunnel() end, tests = {} }
            for _, port in ipairs({ 443, 8443 }) do
              M.tests[#M.tests + 1] = { request = "CONNECT a.test:" .. port, expect = "tunnel", hots = "x" }
            end
            return M
            """)
        #expect(found.count == 2)
        #expect(found.allSatisfy { $0.line == nil && $0.failure?.contains("unknown key 'hots'") == true })
    }

    @Test("a value of the wrong kind is an error naming its key", arguments: [
        ("expect = 3", "'expect' must be a string"),
        ("expect = 'tunnel', tls = 'yes'", "'tls' must be true or false"),
        ("expect = 'tunnel', clusters = 'a'", "'clusters' must be a list of strings"),
        ("expect = 'tunnel', hook = 'init'", "unknown hook 'init'"),
        ("name = 'n'", "a case needs expect, expect_headers, expect_absent or expect_error"),
        ("expect_error = 'x'", "'request' cannot be combined with expect_error"),
    ])
    func wrongKinds(fields: String, message: String) throws {
        let found = try results("""
            return { connect = function(req) return moongate.tunnel() end,
              tests = { { request = "CONNECT a.test:443", \(fields) } } }
            """)
        #expect(found.count == 1)
        #expect(found.first?.failure?.contains(message) == true, "\(found)")
        #expect(found.first?.line == 2)
    }

    @Test("expect_error passes only when the case's config makes the plugin refuse to load with that text")
    func expectError() throws {
        let found = try results("""
            return {
              init = function(config) if config.bad then error("bad config: " .. config.bad) end end,
              connect = function(req) return moongate.tunnel() end,
              tests = {
                { name = "refused", config = { bad = "x" }, expect_error = "bad config: x" },
                { name = "other text", config = { bad = "y" }, expect_error = "bad config: x" },
                { name = "loads", config = {}, expect_error = "bad config" },
              },
            }
            """)
        #expect(found.map(\.passed) == [true, false, false])
        #expect(found[1].failure?.contains("got: p.lua:2: bad config: y") == true, "\(found[1])")
        #expect(found[2].failure == "expected the plugin to refuse to load with 'bad config', but it loaded")
    }

    @Test("fixture lines: unknown and plugin-only keys, invalid JSON with its column, each with its line")
    func fixtureLines() throws {
        let jsonl = """
            {"request": "CONNECT a.test:443", "expect": "tunnel"}
            # a comment

            {"request": "CONNECT a.test:443", "header": {"x": "1"}, "expect": "tunnel"}
            {"request": "CONNECT a.test:443", "config": {}, "expect": "tunnel"}
            {"request": "CONNECT a.test:443" "expect": "tunnel"}
            {"request": "CONNECT a.test:443", "expect": "tunnel", "expect": "deny"}
            {"request": "CONNECT a.test:443", "expect": "deny"}
            """
        let found = try results(
            "return { connect = function(req) return moongate.tunnel() end }",
            fixtures: [FixtureSource(path: "fixtures/recorded.jsonl", text: jsonl)])
        #expect(found.map(\.line) == [1, 4, 5, 6, 7, 8])
        #expect(found.allSatisfy { $0.file == "fixtures/recorded.jsonl" && $0.plugin == nil })
        #expect(found[0].passed)
        #expect(found[1].failure?.hasPrefix("unknown key 'header' (did you mean 'headers'?") == true)
        #expect(found[2].failure == "'config' is only for a plugin's own tests, not fixtures")
        #expect(found[3].failure == "invalid JSON at column 34: expected ',' or '}'")
        #expect(found[4].failure == "invalid JSON at column 55: duplicate key 'expect'")
        #expect(found[5].failure == "expected 'deny', got 'tunnel'")
        #expect("\(try #require(found[3].loadError))".hasPrefix("fixtures/recorded.jsonl:6: [fixture] test 'line 6': invalid JSON"))
    }

    @Test("JSON values of every kind are read", arguments: [
        #"{"request": "CONNECT a.test:443", "expect": "tunnel", "tls": true, "headers": [["x-a", "1"]], "name": "\u00e9\ud83d\ude00\n"}"#,
    ])
    func jsonKinds(line: String) throws {
        let cases = try DecisionCase.parseJSONL(line, file: "f.jsonl")
        #expect(cases.first?.tls == true)
        #expect(cases.first?.headers == [HeaderField("x-a", "1")])
        #expect(cases.first?.name == "é😀\n")
    }

    @Test("a reload stops at the first failure and names its file and line")
    func generationLoadNamesTheLine() throws {
        let error = try #require(ScriptHarness.rejection(of: spec("""
            return {
              connect = function(req) return moongate.tunnel() end,
              tests = {
                { name = "fine", request = "CONNECT a.test:443", expect = "tunnel" },
                { name = "first", request = "CONNECT a.test:443", expect = "deny 403" },
                { name = "second", request = "CONNECT a.test:443", expect = "deny 404" },
              },
            }
            """)))
        #expect(error.step == .test)
        #expect(error.file == "plugins/p.lua")
        #expect(error.line == 5)
        #expect(error.testName == "first")
        #expect("\(error)" == "plugins/p.lua:5: [test] plugin p, test 'first': expected 'deny 403', got 'tunnel'")
    }

    @Test("validation reports every failure of every plugin and fixture, then counts them")
    func validationReportsEverything() throws {
        let good = """
            return { connect = function(req) return moongate.tunnel() end,
              tests = {
                { name = "a", request = "CONNECT a.test:443", expect = "deny" },
                { name = "b", request = "CONNECT a.test:443", expect = "tunnel" },
                { name = "c", request = "CONNECT a.test:443", expect = "deny 404" },
              } }
            """
        let broken = "local M = {}\nfunction M.route(req)\n  return (\nend\nreturn M\n"
        let refusing = "return { init = function(c) error('no config') end }"
        let spec = PolicySpec(
            plugins: [
                PluginSource(name: "good", path: "plugins/good.lua", source: good, priority: 1),
                PluginSource(name: "broken", path: "plugins/broken.lua", source: broken, priority: 2),
                PluginSource(name: "refusing", path: "plugins/refusing.lua", source: refusing, priority: 3),
            ],
            fixtures: [FixtureSource(path: "f.jsonl", text: "{\"request\": \"CONNECT a.test:443\", \"expect\": \"tunnel\"}\n{oops}\n")])
        let report = PolicyValidation.run(spec)
        #expect(!report.passed)
        let lines = report.problems.map { "\($0)" }
        #expect(lines.count == 5, "\(lines)")
        #expect(lines[0].hasPrefix("plugins/broken.lua:4: [compile] plugin broken"))
        #expect(lines[1].hasPrefix("plugins/refusing.lua:1: [init] plugin refusing"))
        #expect(lines[2] == "plugins/good.lua:3: [test] plugin good, test 'a': expected 'deny', got 'tunnel'")
        #expect(lines[3] == "plugins/good.lua:5: [test] plugin good, test 'c': expected 'deny 404', got 'tunnel'")
        #expect(lines[4] == "f.jsonl:2: [fixture] test 'line 2': invalid JSON at column 2: expected a key in double quotes")
        #expect(report.summary == "5 problems: 2 of 3 plugins did not load, 3 of 4 tests failed, fixtures not replayed")
        let clean = PolicyValidation.run(PolicySpec(plugins: [PluginSource(name: "good", path: "g.lua", source: "return {}")]))
        #expect(clean.passed && clean.problems.isEmpty)
    }
}
