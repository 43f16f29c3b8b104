import LuaKit
import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Script faults fail closed")
struct FaultTests {
    private func faultKind(_ outcome: PolicyOutcome) -> String? {
        if case .fault(let fault) = outcome.decision { return fault.kind.description }
        return nil
    }

    @Test("a runtime error in route is a 500 with file and line, counted")
    func runtimeErrorInRoute() throws {
        let h = try harness([("broken", "local M = {}\nfunction M.route(req)\n  return req.nothing.at_all\nend\nreturn M")])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(outcome.decision.localStatus == 500)
        guard case .fault(let fault) = outcome.decision else { Issue.record("expected a fault"); return }
        #expect(fault.message.hasPrefix("broken.lua:3:"))
        #expect(fault.hook == "route")
        #expect(h.stats.faults(plugin: "broken", hook: "route") == 1)
        _ = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(h.stats.faults(plugin: "broken", hook: "route") == 2)
    }

    @Test("a runtime error in connect is a 500, never a tunnel and never a 403")
    func runtimeErrorInConnect() throws {
        let h = try harness([
            ("allow", "return { connect = function(req) return moongate.tunnel() end }"),
            ("broken", "return { connect = function(req) error('boom') end }"),
        ])
        let outcome = try h.connect("example.org:443")
        #expect(outcome.decision.localStatus == 500)
        #expect(faultKind(outcome) == "runtime")
        #expect(h.stats.faults(plugin: "broken", hook: "connect") == 1)
    }

    @Test("a fault in sanitize_request fails the request closed")
    func faultInSanitizeRequest() throws {
        let h = try harness([
            ("router", "return { route = function(req) return moongate.route('x') end }"),
            ("broken", "return { sanitize_request = function(req, edit) edit:set('bad name', 'x') end }"),
        ])
        let verdict = h.evaluate(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(verdict.outcome.decision.localStatus == 500)
        #expect(verdict.upstreamHeaders == nil)
        #expect(h.stats.faults(plugin: "broken", hook: "sanitize_request") == 1)
    }

    @Test("a fault in sanitize_response is reported to the caller and counted")
    func faultInSanitizeResponse() throws {
        let h = try harness([("broken", "return { sanitize_response = function(req, res, edit) error('nope') end }")])
        var headers = [HeaderField("Server", "origin")]
        let fault = h.instance.sanitizeResponse(for: try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]), status: 200, headers: &headers)
        #expect(fault?.hook == "sanitize_response")
        #expect(h.stats.faults(plugin: "broken", hook: "sanitize_response") == 1)
    }

    @Test("a fault in log is counted and nothing else happens")
    func faultInLog() throws {
        let h = try harness([("broken", "return { log = function(req, res) error('log failed') end }")])
        h.instance.log(request: try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]), status: 200)
        #expect(h.stats.faults(plugin: "broken", hook: "log") == 1)
    }

    @Test("a runaway loop in a hook hits the budget: 500, and the next call works")
    func runawayLoop() throws {
        let h = try harness(
            [("loop", "return { route = function(req) if req.path == '/spin' then while true do end end return moongate.route('ok') end }")],
            budget: 200_000)
        let spin = h.decide(try request("GET /spin HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(faultKind(spin) == "budget")
        #expect(h.decide(try request("GET /fine HTTP/1.1", [HeaderField("Host", "a.test")])).decision == .route(cluster: "ok"))
    }

    @Test("a memory bomb in a hook hits the cap: 500, and the next call works")
    func memoryBomb() throws {
        let h = try harness(
            [("bomb", "return { route = function(req) if req.path == '/bomb' then local t = {} for i = 1, 1e9 do t[i] = i end end return moongate.route('ok') end }")],
            // The deadline is out of the way: on a loaded machine, filling 4 MiB can take over 10 ms.
            budget: 100_000_000, cap: 4 << 20, deadline: .seconds(5))
        let bomb = h.decide(try request("GET /bomb HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(faultKind(bomb) == "memory")
        #expect(h.decide(try request("GET /fine HTTP/1.1", [HeaderField("Host", "a.test")])).decision == .route(cluster: "ok"))
    }

    @Test("invalid return values are faults", arguments: [
        "return 42",
        "return 'teleport'",
        "return moongate.route()",
        "return moongate.deny(200)",
        "return moongate.respond(200, string.rep('x', 70000))",
        "return moongate.deny(403, 'x', { ['x-bad'] = 'a\\r\\nb' })",
        "return moongate.tunnel()",
    ])
    func invalidReturns(body: String) throws {
        let h = try harness([("bad", "return { route = function(req)\n\(body)\nend }")])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(faultKind(outcome) == "invalid_return", "\(body): \(outcome)")
        #expect(h.stats.faults(plugin: "bad", hook: "route") == 1)
    }

    @Test("a global written during a request is an error, so nothing leaks to the next one")
    func globalsDoNotLeak() throws {
        let h = try harness([("leaky", "return { route = function(req) seen = req.path return moongate.route('x') end }")])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        guard case .fault(let fault) = outcome.decision else { Issue.record("expected a fault"); return }
        #expect(fault.message.contains("attempt to set global 'seen'"))
    }
}

@Suite("Broken scripts never load")
struct RejectionTests {
    private func spec(_ source: String, config: ConfigValue = .table([])) -> PolicySpec {
        PolicySpec(plugins: [PluginSource(name: "p", path: "plugins/p.lua", source: source, config: config)])
    }

    @Test("a syntax error is rejected with its file and line")
    func syntaxError() throws {
        let error = try #require(ScriptHarness.rejection(of: spec("local M = {}\nfunction M.route(req)\n  return (\nend\nreturn M")))
        #expect(error.step == .compile)
        #expect(error.file == "plugins/p.lua")
        #expect(error.line == 4)
        #expect(error.message.hasPrefix("p.lua:4:"))
    }

    @Test("a runtime error in init is rejected")
    func initError() throws {
        let error = try #require(ScriptHarness.rejection(of: spec("return { init = function(c) error('need users') end }")))
        #expect(error.step == .initialize)
        #expect(error.line == 1)
        #expect(error.message.contains("need users"))
    }

    @Test("a plugin config that init refuses is rejected")
    func configRefused() throws {
        let url = "\(repositoryRoot)/plugins/connect_allowlist.lua"
        let source = try readFile(url)
        let error = try #require(ScriptHarness.rejection(of: PolicySpec(plugins: [
            PluginSource(name: "connect_allowlist", path: url, source: source, config: .table([("allow", .array([.string("*")])), ("ports", .array([.string("https")]))]))
        ])))
        #expect(error.message.contains("ports must be integers"))
    }

    @Test("a failing tests entry is rejected with the test's name")
    func failingTest() throws {
        let error = try #require(ScriptHarness.rejection(of: spec("""
            return {
              connect = function(req) return moongate.tunnel() end,
              tests = { { name = 'refuses port 25', request = 'CONNECT example.org:25', expect = 'deny 403' } },
            }
            """)))
        #expect(error.step == .test)
        #expect(error.testName == "refuses port 25")
        #expect(error.message == "expected 'deny 403', got 'tunnel'")
    }

    @Test("a plugin that returns no table is rejected")
    func noTable() throws {
        let error = try #require(ScriptHarness.rejection(of: spec("local x = 1")))
        #expect(error.message.contains("must return a table"))
    }

    @Test("a hook that is not a function is rejected")
    func hookNotAFunction() throws {
        let error = try #require(ScriptHarness.rejection(of: spec("return { route = 'yes' }")))
        #expect(error.message.contains("'route' must be a function"))
    }

}

/// Every API object checks the kind of its arguments: each case here crashed or read foreign memory
/// before the checks (regressions, kept by name).
@Suite("API objects check their arguments")
struct APIObjectCheckTests {
    private func faultKind(_ outcome: PolicyOutcome) -> String? {
        if case .fault(let fault) = outcome.decision { return fault.kind.description }
        return nil
    }

    @Test("req.header with another object as self is a fault, not a crash", arguments: [
        "req.header(moongate.hostset({'a.example'}), 'x')",      // SIGSEGV in view_header before the check
        "req.header(moongate.cidrset({'10.0.0.0/8'}), 'x')",
        "req.header(moongate.router({}), 'x')",
        "req.header(req.target, 'x')",
        "req.header(req.client, 'x')",
        "req.header({}, 'x')",
        "req.header('str', 'x')",
        "req.header(nil, 'x')",
        "for _ in req.headers(moongate.hostset({'a.example'})) do end",
        "moongate.hostset({'a'}).match(req, 'a')",
        "moongate.cidrset({'10.0.0.0/8'}).contains(req, '10.0.0.1')",
        "moongate.router({}).match(req, 'a', '/')",
        "re.match(req, 'a')", "re.find(moongate.hostset({'a'}), 'a')", "re.test({}, 'a')",
    ])
    func wrongSelfInRouteIsAFault(call: String) throws {
        let h = try harness([(
            "hostile", "local re = moongate.regex('a')\nreturn { route = function(req) \(call) return moongate.route('x') end }"
        )])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(outcome.decision.localStatus == 500)
        #expect(faultKind(outcome) == "runtime")
        // The state is intact: the request view still answers the next call.
        let h2 = try harness([("fine", "return { route = function(req) return moongate.route(req:header('host')) end }")])
        #expect(h2.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")])).decision == .route(cluster: "a.test"))
    }

    @Test("the edit object's methods refuse another self (the edit used to read its C context out as header bytes)", arguments: [
        "edit.set(req, 'x', 'y')", "edit.append(moongate.hostset({'a'}), 'x', 'y')", "edit.remove({}, 'x')",
        "req.header(edit, 'x')", "for _ in req.headers(edit) do end",
    ])
    func wrongSelfInSanitizeIsAFault(call: String) throws {
        let h = try harness([
            ("router", "return { route = function(req) return moongate.route('x') end }"),
            ("hostile", "return { sanitize_request = function(req, edit) \(call) end }"),
        ])
        let verdict = h.evaluate(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(verdict.outcome.decision.localStatus == 500)
        #expect(verdict.upstreamHeaders == nil)
        #expect(h.stats.faults(plugin: "hostile", hook: "sanitize_request") == 1)
    }

    @Test("a host longer than any DNS name never matches a suffix it would end in if cut at 256 bytes")
    func longHostIsNotTruncated() throws {
        let h = try harness([(
            "allow",
            """
            local set, routes
            return {
              init = function() set = moongate.hostset({ "*.example.com" }); routes = moongate.router({ { host = "*.example.com", cluster = "x" } }) end,
              route = function(req)
                local host = req:header("x-forwarded-host")  -- any string a client sends
                if req:header("x-via") == "set" then
                  if set:match(host) then return moongate.route("set") end
                  return nil
                end
                local r = routes:match(host, req.path)
                if r then return moongate.route(r.cluster) end
              end,
            }
            """
        )])
        let host = String(repeating: "a", count: 244) + ".example.com.evil.test"
        for via in ["set", "router"] {
            let outcome = h.decide(
                try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test"), HeaderField("X-Forwarded-Host", host), HeaderField("X-Via", via)]))
            #expect(outcome.decision.localStatus == 404, "\(via)")
        }
        let good = [HeaderField("Host", "a.test"), HeaderField("X-Forwarded-Host", "api.example.com")]
        #expect(h.decide(try request("GET /x HTTP/1.1", good + [HeaderField("X-Via", "set")])).decision == .route(cluster: "set"))
        #expect(h.decide(try request("GET /x HTTP/1.1", good)).decision == .route(cluster: "x"))
    }

    @Test("a regex is compiled when the plugin loads, never in a hook")
    func regexCompileInHookIsAFault() throws {
        let h = try harness([("late", "return { route = function(req) local re = moongate.regex('a+') return moongate.route('x') end }")])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        guard case .fault(let fault) = outcome.decision else { Issue.record("expected a fault"); return }
        #expect(fault.message.contains("compile regexes when the plugin loads"))
        #expect(fault.message.hasPrefix("late.lua:1:"))
    }
}

