import Logging
import MoongateConfig
import MoongatePolicy

/// What one run of the API fuzzer saw.
public struct APIFuzzReport: Sendable, CustomStringConvertible {
    /// Cases run (each runs route, connect, sanitize_response and log, and sanitize_request when
    /// route sends the request on).
    public var cases = 0
    /// Hook calls that ended in a fault, by hook and kind (`route/runtime`).
    public var faults: [String: Int] = [:]
    /// Lua heap after a full collection, once warmed up and at the end.
    public var heapBaseline = 0
    public var heapAfter = 0

    /// Bytes the Lua heap grew across the run (after full collections).
    public var heapGrowth: Int { heapAfter - heapBaseline }

    public var description: String {
        let faultLines = faults.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }.joined(separator: "\n")
        return """
            cases: \(cases)
            hook calls that faulted (the rest decided): \(faults.values.reduce(0, +))
            \(faultLines)
            lua heap after a full collection: \(heapBaseline) bytes after warm-up, \(heapAfter) at the end (growth \(heapGrowth))
            """
    }
}

/// Drives the API fuzz plugin (`Tests/fuzz/api_fuzz.lua`): each case stages a request carrying a
/// seed and runs every hook (route and sanitize_request through `evaluate`, connect, sanitize_response,
/// log), where the plugin calls functions and methods with random arguments of every kind. A case
/// ends in a decision or a fault; anything else (a crash, a sanitizer report) ends the process.
/// The Lua heap is measured after full collections, so a leak across requests shows as growth.
public struct APIFuzzer {
    private let instance: PolicyInstance
    private let stats = PolicyStats()

    /// Loads the plugin at `pluginPath` with the default limits (10 ms hook deadline, 1M
    /// instructions, 16 MiB) and no log output.
    public init(pluginPath: String) throws {
        let plugin = PluginSource(name: "api_fuzz", path: pluginPath, source: try readFile(pluginPath))
        let quiet = Logger(label: "moongate.fuzz") { _ in SwiftLogNoOpLogHandler() }
        instance = try PolicyInstance(spec: PolicySpec(plugins: [plugin]), stats: stats, logger: quiet, scriptLogger: quiet)
    }

    /// Runs `cases` cases from `seed` on; `progress` is called every 1,000 cases (faults are
    /// tallied at the end).
    public func run(cases: Int, seed: Int, progress: (APIFuzzReport) -> Void = { _ in }) throws -> APIFuzzReport {
        var report = APIFuzzReport()
        let warmUp = min(200, cases / 10)
        for index in 0..<cases {
            if index == warmUp {
                instance.collectGarbage()
                report.heapBaseline = instance.luaHeapBytes
            }
            try runCase(seed: seed + index)
            report.cases += 1
            if report.cases % 1000 == 0 { progress(report) }
        }
        instance.collectGarbage()
        report.heapAfter = instance.luaHeapBytes
        for (key, value) in stats.snapshot { report.faults["\(key.hook)/\(key.kind)", default: 0] += value }
        return report
    }

    private func runCase(seed: Int) throws {
        let client = ClientInfo(ip: seed % 2 == 0 ? "203.0.113.9" : "::1", port: 40000 + seed % 1000)
        var headers = [
            HeaderField("Host", "a.example"), HeaderField("X-Fuzz-Seed", String(seed)),
            HeaderField("User-Agent", "fuzz"), HeaderField("Cookie", String(repeating: "c", count: seed % 300)),
        ]
        if seed % 3 == 0 { headers.append(contentsOf: [HeaderField("Connection", "upgrade"), HeaderField("Upgrade", "websocket")]) }
        let get = try PolicyRequest.parse(line: "GET /api/x?y=\(seed) HTTP/1.1", headers: headers, client: client)
        _ = instance.evaluate(get)
        let connect = try PolicyRequest.parse(
            line: "CONNECT example.org:443 HTTP/1.1", headers: [HeaderField("X-Fuzz-Seed", String(seed))], client: client)
        _ = instance.decide(connect)
        var responseHeaders = [HeaderField("Server", "origin"), HeaderField("Content-Type", "text/plain")]
        _ = instance.sanitizeResponse(for: get, status: 200, headers: &responseHeaders)
        instance.log(request: get, status: 200, headers: responseHeaders)
    }
}
