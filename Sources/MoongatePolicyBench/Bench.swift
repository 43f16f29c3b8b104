import Logging
import MoongateConfig
import MoongatePolicy

/// `swift run -c release moongate-policy-bench [calls] [runs] [root] [case]`: nanoseconds per policy decision with the
/// shipped plugins, Swift bridge included (staging the request, calling the hooks, reading the verb).
@main
struct PolicyBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        let calls = arguments.count > 1 ? Int(arguments[1]) ?? 1_000_000 : 1_000_000
        let runs = arguments.count > 2 ? Int(arguments[2]) ?? 5 : 5
        let root = arguments.count > 3 ? arguments[3] : "."
        // An optional fourth argument runs only the cases whose name contains it ("route", "connect").
        let only = arguments.count > 4 ? arguments[4] : ""
        LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }

        let config = try ConfigLoader.load(path: "\(root)/configs/default.yaml")
        let defaults = try PolicyInstance(spec: try PolicySpec.read(config.policy))
        let routerSource = try readFile("\(root)/plugins/host_router.lua")
        let router = try PolicyInstance(spec: PolicySpec(plugins: [
            PluginSource(
                name: "host_router", path: "host_router.lua", source: routerSource,
                config: .table([("routes", .array([
                    .table([("host", .string("app.bench.local")), ("prefix", .string("/")), ("cluster", .string("origin"))]),
                    .table([("host", .string("static.bench.local")), ("prefix", .string("/")), ("cluster", .string("origin"))]),
                ]))]))
        ]))

        // The 10-header request of reference/lua-embedding.md §2.2.
        let headers = [
            HeaderField("Host", "app.bench.local"), HeaderField("User-Agent", "wrk/4.2"), HeaderField("Accept", "*/*"),
            HeaderField("Accept-Encoding", "gzip"), HeaderField("X-Tenant", "acme"),
            HeaderField("X-Request-Id", "7f3c1a2e-8b1d-4c55-9a0e-2d6f8e9b1c3a"),
            HeaderField("Authorization", "Bearer " + String(repeating: "x", count: 100)),
            HeaderField("Content-Type", "application/json"),
            HeaderField("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            HeaderField("Cookie", "session=abc; theme=dark"),
        ]
        let client = ClientInfo(ip: "127.0.0.1", port: 50000)
        let route = try PolicyRequest.http1(method: "GET", uri: "/1k.bin", headers: headers, client: client)
        let connect = try PolicyRequest.http1(method: "CONNECT", uri: "example.org:443", headers: [HeaderField("Host", "example.org:443")], client: client)
        let forward = try PolicyRequest.http1(method: "GET", uri: "http://example.org/x", headers: Array(headers.dropFirst()), client: client)

        print("moongate policy benchmark: \(calls) calls x \(runs) runs per case (ns per call; best / median)")
        measure("route (host_router, 10 headers)", calls: calls, runs: runs, only: only) { _ = router.decide(route) }
        measure("connect (default config)", calls: calls, runs: runs, only: only) { _ = defaults.decide(connect) }
        measure("forward (default config, decide only)", calls: calls, runs: runs, only: only) { _ = defaults.decide(forward) }
        measure("forward + sanitize_request (XFF, Via, floor)", calls: calls, runs: runs, only: only) { _ = defaults.evaluate(forward) }
    }

    static func measure(_ name: String, calls: Int, runs: Int, only: String, _ body: () -> Void) {
        guard only.isEmpty || name.contains(only) else { return }
        for _ in 0..<min(calls, 100_000) { body() }
        var samples: [Double] = []
        let clock = ContinuousClock()
        for _ in 0..<runs {
            let elapsed = clock.measure { for _ in 0..<calls { body() } }
            let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            samples.append(ns / Double(calls))
        }
        samples.sort()
        let best = samples[0]
        let median = samples[samples.count / 2]
        let pad = String(repeating: " ", count: max(0, 48 - name.count))
        print("  \(name)\(pad)\(format(best)) / \(format(median)) ns")
    }

    static func format(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return String(rounded)
    }
}
