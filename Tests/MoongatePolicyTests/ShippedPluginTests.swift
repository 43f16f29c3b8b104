import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Shipped plugins and the default config")
struct ShippedPluginTests {
    let harness: ScriptHarness

    init() throws {
        harness = try ScriptHarness(configFile: "\(repositoryRoot)/configs/default.yaml")
    }

    @Test("every shipped plugin's own tests pass through the harness")
    func pluginTestsPass() throws {
        let results = harness.runPluginTests()
        for failure in results where !failure.passed { Issue.record("\(failure)") }
        #expect(results.count >= 30)
        #expect(Set(results.compactMap(\.plugin)) == ["connect_allowlist", "host_router", "header_sanitizer"])
    }

    @Test("proxy_auth's own tests pass")
    func proxyAuthTestsPass() throws {
        let auth = try ScriptHarness(plugins: [(file: "\(repositoryRoot)/plugins/proxy_auth.lua", config: .table([("users", .table([("u", .string("p"))]))]))])
        let results = auth.runPluginTests()
        #expect(results.count == 10)
        #expect(results.filter { !$0.passed }.isEmpty, "\(results.filter { !$0.passed })")
    }

    @Test("the default config tunnels public targets on 443 and says which plugin decided")
    func publicTargetIsTunnelled() throws {
        let outcome = try harness.connect("example.org:443")
        #expect(outcome.decision == .tunnel)
        #expect(outcome.plugin == "connect_allowlist")
    }

    @Test("CONNECT is off unless a plugin enables it: other ports get the default 403")
    func connectDefaultsToDeny() throws {
        let outcome = try harness.connect("example.org:25")
        #expect(outcome.decision.localStatus == 403)
        #expect(outcome.plugin == nil)
    }

    @Test("loopback, metadata and private targets are refused by the allowlist", arguments: [
        "127.0.0.1:443", "127.1:443", "0x7f000001:443", "0177.0.0.1:443", "[::1]:443",
        "[::ffff:127.0.0.1]:443", "169.254.169.254:443", "10.1.2.3:443", "192.168.0.1:443", "100.64.1.1:443",
    ])
    func specialTargetsAreRefused(target: String) throws {
        let outcome = try harness.connect(target)
        #expect(outcome.decision.localStatus == 403, "\(target): \(outcome)")
    }

    @Test("HTTP/2 CONNECT and extended CONNECT are matched by their target")
    func http2ConnectIsMatchedByTarget() throws {
        #expect(try harness.connectHTTP2("example.org:443").decision == .tunnel)
        #expect(try harness.connectHTTP2("example.org:80").decision.localStatus == 403)
    }

    @Test("absolute-form requests are forwarded; private ones are refused")
    func absoluteFormIsForwarded() throws {
        #expect(try harness.get("http://example.org/index.html").decision == .forward)
        #expect(try harness.get("http://10.0.0.1/").decision.localStatus == 403)
        #expect(try harness.get("http://example.org:8080/").decision.localStatus == 403)
    }

    @Test("forwarded requests carry X-Forwarded-For and Via, and never hop-by-hop headers")
    func forwardedHeadersAreSanitized() throws {
        let verdict = harness.evaluate(
            try request(
                "GET http://example.org/ HTTP/1.1",
                [HeaderField("Connection", "keep-alive, X-Secret"), HeaderField("X-Secret", "1"),
                 HeaderField("Proxy-Authorization", "Basic eDp5"), HeaderField("Accept", "*/*")]))
        let headers = try #require(verdict.upstreamHeaders)
        #expect(headers.first(named: "x-forwarded-for") == "192.0.2.10")
        #expect(headers.first(named: "via") == "1.1 moongate")
        #expect(headers.first(named: "accept") == "*/*")
        for name in ["connection", "x-secret", "proxy-authorization", "keep-alive"] {
            #expect(headers.first(named: name) == nil, "\(name) must not pass")
        }
    }

    @Test("the fast path of route and connect allocates nothing in Lua")
    func fastPathHasNoHeapGrowth() throws {
        let connect = try request("CONNECT example.org:443")
        #expect(harness.heapGrowth(of: connect, calls: 20_000) == 0)
        let forward = try request("GET http://example.org/x HTTP/1.1", [HeaderField("Host", "example.org")])
        #expect(harness.heapGrowth(of: forward, calls: 20_000) == 0)
        let routed = try ScriptHarness(
            plugins: [(file: "\(repositoryRoot)/plugins/host_router.lua",
                       config: .table([("routes", .array([.table([("host", .string("app.bench.local")), ("prefix", .string("/")), ("cluster", .string("origin"))])]))]))])
        let get = try request("GET /1k.bin HTTP/1.1", [HeaderField("Host", "app.bench.local")])
        #expect(routed.decide(get).decision == .route(cluster: "origin"))
        #expect(routed.heapGrowth(of: get, calls: 20_000) == 0)
    }

    @Test("a JSONL fixture is replayed against the whole composition")
    func fixtureReplay() throws {
        let jsonl = """
            {"name": "public tunnel", "request": "CONNECT example.org:443", "expect": "tunnel", "expect_plugin": "connect_allowlist"}
            # comments and blank lines are skipped

            {"request": "CONNECT example.org:25", "expect": "deny 403"}
            {"request": "GET http://example.org/ HTTP/1.1", "expect": "forward", "expect_headers": {"via": "1.1 moongate"}}
            {"request": "CONNECT example.org:443", "expect": "deny"}
            """
        let results = try harness.replay(jsonl: jsonl, file: "recorded.jsonl")
        #expect(results.count == 4)
        #expect(results.prefix(3).filter { !$0.passed }.isEmpty, "\(results)")
        #expect(results[3].failure == "expected 'deny', got 'tunnel'")
    }
}
