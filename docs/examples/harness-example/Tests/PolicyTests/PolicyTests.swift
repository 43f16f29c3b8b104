import MoongatePolicy
import MoongateTesting
import Testing

/// The policy folder of this package, found from this file's path.
let policyFolder: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/PolicyTests/PolicyTests.swift
    return parts.joined(separator: "/") + "/policy"
}()

/// The policy loaded exactly as `moongate serve` would load it: config, plugins, their tests and
/// fixtures, limits and deadlines.
@Suite("The API-key policy")
struct PolicyTests {
    let harness: ScriptHarness

    init() throws {
        harness = try ScriptHarness(configFile: "\(policyFolder)/moongate.yaml")
    }

    @Test("every plugin test and every fixture line passes")
    func pluginTestsAndFixturesPass() {
        let results = harness.runPluginTests()
        for failure in results where !failure.passed { Issue.record("\(failure)") }
        #expect(results.count == 8)
    }

    @Test("a live key routes /api/ to the api cluster, and the key does not go upstream")
    func liveKey() throws {
        let verdict = harness.evaluate(
            try harness.request("GET /api/v1/users", headers: [HeaderField("host", "example.com"), HeaderField("x-api-key", "k-live-1")]))
        #expect(verdict.outcome.decision == .route(cluster: "api"))
        #expect(verdict.outcome.plugin == "api_keys")
        #expect(verdict.upstreamHeaders?.first(named: "x-api-key") == nil)
    }

    @Test("no key or a wrong one is a 401; other paths go to web")
    func otherRequests() throws {
        #expect(try harness.decide(harness.request("GET /api/v1/users", headers: [HeaderField("host", "example.com")])).decision.localStatus == 401)
        #expect(try harness.get("http://example.com/api/x", headers: [HeaderField("x-api-key", "nope")]).decision.localStatus == 401)
        #expect(try harness.get("http://example.com/about").decision == .route(cluster: "web"))
    }

    @Test("CONNECT is off: no plugin enables it")
    func connectIsOff() throws {
        #expect(try harness.connect("example.com:443").decision.localStatus == 403)
    }

    @Test("recorded traffic replays from JSONL text too")
    func replayText() throws {
        let results = try harness.replay(jsonl: """
            {"request": "GET /api/v2/", "headers": {"host": "example.com", "x-api-key": "k-live-1"}, "expect": "route api"}
            {"request": "GET /api/v2/", "headers": {"host": "example.com"}, "expect": "deny"}
            """)
        let failed = results.filter { !$0.passed }
        #expect(results.count == 2)
        #expect(failed.isEmpty, "\(failed)")
    }

    @Test("a request on the fast path leaves nothing on the Lua heap")
    func noHeapGrowth() throws {
        let request = try harness.request("GET /about", headers: [HeaderField("host", "example.com")])
        #expect(harness.heapGrowth(of: request) == 0)
    }

    @Test("a misspelt cluster in the config is refused before any traffic")
    func misspeltClusterIsRefused() throws {
        var spec = harness.spec
        spec.plugins[0].config = .table([
            ("keys", .array([.string("k")])), ("api_cluster", .string("apj")), ("web_cluster", .string("web")),
        ])
        let error = ScriptHarness.rejection(of: spec)
        #expect(error?.message.contains("unknown cluster 'apj'") == true)
    }
}
