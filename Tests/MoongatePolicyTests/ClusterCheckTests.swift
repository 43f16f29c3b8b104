import LuaKit
import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Cluster names are checked before traffic")
struct ClusterCheckTests {
    private let get = "GET /x HTTP/1.1"
    private let host = [HeaderField("Host", "a.test")]

    private func spec(_ source: String, clusters: [String], config: ConfigValue = .table([]), name: String = "p") -> PolicySpec {
        PolicySpec(plugins: [PluginSource(name: name, path: "plugins/\(name).lua", source: source, config: config)], clusters: clusters)
    }

    private func shipped(_ plugin: String, config: ConfigValue, clusters: [String]) throws -> PolicySpec {
        let path = "\(repositoryRoot)/plugins/\(plugin).lua"
        return PolicySpec(
            plugins: [PluginSource(name: plugin, path: path, source: try readFile(path), config: config)], clusters: clusters)
    }

    @Test("moongate.clusters() lists the configured names, sorted; empty when unknown")
    func clustersAreListed() throws {
        let source = "return { route = function(req) return moongate.respond(200, table.concat(moongate.clusters(), ',')) end }"
        let known = try ScriptHarness(spec: spec(source, clusters: ["web", "api", "web", "admin"]))
        #expect(known.decide(try request(get, host)).decision == .respond(status: 200, body: "admin,api,web", headers: []))
        let unknown = try ScriptHarness(spec: spec(source, clusters: []))
        #expect(unknown.decide(try request(get, host)).decision == .respond(status: 200, body: "", headers: []))
    }

    @Test("a config's clusters reach the spec")
    func configClustersReachTheSpec() throws {
        let config = try ConfigLoader.load(path: "\(repositoryRoot)/configs/reverse_proxy.yaml")
        #expect(try PolicySpec.read(config.policy).clusters == ["api", "web"])
        let harness = try ScriptHarness(configFile: "\(repositoryRoot)/configs/proxy_connect.yaml")
        #expect(harness.spec.clusters == ["parent"])
    }

    @Test("route and tunnel_via to an unknown cluster fault at once, naming the file, the line and the clusters", arguments: [
        ("return moongate.route('apii')", "moongate.route: unknown cluster 'apii' (clusters: api, web)"),
        ("return moongate.tunnel_via('parnet')", "moongate.tunnel_via: unknown cluster 'parnet' (clusters: api, web)"),
        ("return moongate.route(42)", "moongate.route: the cluster name must be a string, not a number value"),
        ("local ok = pcall(moongate.route, 'nope') return moongate.respond(ok and 200 or 500)", nil),
    ])
    func unknownClusterFaults(body: String, message: String?) throws {
        let h = try ScriptHarness(spec: spec("local M = {}\nfunction M.route(req)\n  \(body)\nend\nreturn M", clusters: ["api", "web"]))
        let outcome = h.decide(try request(get, host))
        guard let message else {
            #expect(outcome.decision == .respond(status: 500, body: nil, headers: []), "the check raises where it is called")
            return
        }
        guard case .fault(let fault) = outcome.decision else {
            Issue.record("expected a fault, got \(outcome)")
            return
        }
        #expect(fault.kind == .runtime)
        #expect(fault.message.hasPrefix("p.lua:3: "), "\(fault.message)")
        #expect(fault.message.contains(message), "\(fault.message)")
    }

    @Test("known names pass, and with no known clusters nothing is checked")
    func knownOrUnknownPass() throws {
        let source = "return { route = function(req) return moongate.route('api') end, connect = function(req) return moongate.tunnel_via('x') end }"
        let known = try ScriptHarness(spec: spec(source.replacingOccurrences("'x'", "'api'"), clusters: ["api"]))
        #expect(known.decide(try request(get, host)).decision == .route(cluster: "api"))
        #expect(try known.connect("example.org:443").decision == .tunnelVia(cluster: "api"))
        let unknown = try ScriptHarness(spec: spec(source, clusters: []))
        #expect(try unknown.connect("example.org:443").decision == .tunnelVia(cluster: "x"))
    }

    @Test("a hook that returns a route verb by hand with an unknown cluster is an invalid return")
    func rawVerbIsChecked() throws {
        let h = try ScriptHarness(spec: spec("return { route = function(req) return 'route', 'apii' end }", clusters: ["api"]))
        guard case .fault(let fault) = h.decide(try request(get, host)).decision else {
            Issue.record("expected a fault")
            return
        }
        #expect(fault.kind == .invalidReturn)
        #expect(fault.message.contains("configured cluster"))
    }

    @Test("host_router refuses a route to a misspelt cluster when it loads, naming its file and line")
    func hostRouterChecksItsRoutes() throws {
        let routes = ConfigValue.table([("routes", .array([.table([("host", .string("a.test")), ("cluster", .string("apii"))])]))])
        let error = try #require(ScriptHarness.rejection(of: try shipped("host_router", config: routes, clusters: ["api", "web"])))
        #expect(error.step == .initialize)
        #expect(error.file.hasSuffix("plugins/host_router.lua"))
        #expect(error.line != nil)
        #expect(error.message.contains("routes[1]: unknown cluster 'apii' (clusters: api, web)"))
        #expect(ScriptHarness.rejection(of: try shipped("host_router", config: routes, clusters: [])) == nil, "unknown clusters: no check")
    }

    @Test("connect_allowlist refuses a via that is not a cluster, naming its file and line")
    func allowlistChecksVia() throws {
        let config = ConfigValue.table([("allow", .array([.string("*")])), ("via", .string("parnet"))])
        let error = try #require(ScriptHarness.rejection(of: try shipped("connect_allowlist", config: config, clusters: ["parent"])))
        #expect(error.step == .initialize)
        #expect(error.file.hasSuffix("plugins/connect_allowlist.lua"))
        #expect(error.line != nil)
        #expect(error.message.contains("via: unknown cluster 'parnet' (clusters: parent)"))
    }

    @Test("a test that expects a cluster that is not configured fails, in a plugin's tests and in a fixture")
    func expectationsNameKnownClusters() throws {
        let source = """
            return {
              route = function(req) return moongate.route('api') end,
              tests = {
                { name = "known", request = "GET /x HTTP/1.1", headers = { host = "a" }, expect = "route api" },
                { name = "misspelt", request = "GET /x HTTP/1.1", headers = { host = "a" }, expect = "route apii" },
                { name = "pinned", request = "GET /x HTTP/1.1", headers = { host = "a" }, clusters = { "api", "apii" },
                  expect = "route apii" },
              },
            }
            """
        let fixture = FixtureSource(path: "recorded.jsonl", text: #"{"request": "CONNECT a.test:443", "expect": "tunnel_via parnet"}"#)
        var withFixture = spec(source, clusters: ["api"])
        withFixture.fixtures = [fixture]
        let results = try ScriptHarness(spec: withFixture).runPluginTests()
        let failures = Dictionary(uniqueKeysWithValues: results.map { ($0.name, $0.failure) })
        #expect(failures["known"] == .some(nil))
        #expect(failures["misspelt"] == "expects cluster 'apii', which is not configured (clusters: api)")
        // A case's own clusters are the ones it runs with: the hook's route('api') is fine, 'apii' is known,
        // and the decision differs from the expectation (an ordinary failure, not a cluster one).
        #expect(failures["pinned"] == "expected 'route apii', got 'route api'")
        let replayed = try #require(results.first { $0.file == "recorded.jsonl" })
        #expect(replayed.failure == "expects cluster 'parnet', which is not configured (clusters: api)")
        #expect(replayed.line == 1)
        // With the clusters unknown, only the decision counts.
        let unchecked = try ScriptHarness(spec: spec(source, clusters: [])).runPluginTests()
        #expect(unchecked.first { $0.name == "misspelt" }?.failure == "expected 'route apii', got 'route api'")
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
