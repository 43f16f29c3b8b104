import Logging
import MoongateConfig
import MoongatePolicy

/// Drives Moongate policy scripts in-process, loaded exactly as the proxy loads them.
///
/// ```swift
/// let harness = try ScriptHarness(configFile: "configs/default.yaml")
/// #expect(try harness.connect("example.org:443").decision == .tunnel)
/// #expect(try harness.connect("127.0.0.1:443").decision.localStatus == 403)
/// ```
public final class ScriptHarness {
    /// The loaded spec (plugins in priority order, with configs).
    public let spec: PolicySpec
    /// The instance every call goes through.
    public let instance: PolicyInstance
    /// Fault counters of this harness.
    public let stats: PolicyStats

    /// Loads the policy of a config file: its plugins, configs, limits and fixtures.
    /// - Throws: ``ConfigError`` or ``PolicyLoadError`` with file and line.
    public convenience init(configFile: String) throws {
        let config = try ConfigLoader.load(path: configFile)
        try self.init(spec: try PolicySpec.read(config.policy))
    }

    /// Loads a spec built in Swift.
    /// - Parameter scriptLogger: where the lines scripts log (`moongate.log`, `print`) go.
    public init(spec: PolicySpec, scriptLogger: Logger = Logger(label: "moongate.script")) throws(PolicyLoadError) {
        self.spec = spec
        self.stats = PolicyStats()
        self.instance = try PolicyInstance(
            spec: spec, generationID: 1, stats: stats, logger: Logger(label: "moongate.harness"), scriptLogger: scriptLogger)
    }

    /// Loads plugin files with their configs, in the order given.
    /// - Parameter clusters: the configured cluster names (empty: unknown, nothing is checked).
    public convenience init(plugins: [(file: String, config: ConfigValue)], clusters: [String] = []) throws {
        var sources: [PluginSource] = []
        for (index, plugin) in plugins.enumerated() {
            let name = String(plugin.file.split(separator: "/").last ?? "plugin").replacingSuffix(".lua")
            sources.append(PluginSource(name: name, path: plugin.file, source: try readFile(plugin.file), priority: index, config: plugin.config))
        }
        try self.init(spec: PolicySpec(plugins: sources, clusters: clusters))
    }

    // MARK: - Driving hooks

    /// The composed decision for a request, and the plugin that made it.
    public func decide(_ request: PolicyRequest) -> PolicyOutcome { instance.decide(request) }

    /// The decision and the headers that would go upstream (script edits and the floor applied).
    public func evaluate(_ request: PolicyRequest) -> PolicyVerdict { instance.evaluate(request) }

    /// An HTTP/1.1 `CONNECT host:port`.
    public func connect(_ target: String, headers: [HeaderField] = [], client: String = "127.0.0.1") throws -> PolicyOutcome {
        decide(try PolicyRequest.http1(method: "CONNECT", uri: target, headers: headers, client: ClientInfo(ip: client)))
    }

    /// An HTTP/2 CONNECT stream (`:authority host:port`, no `:scheme` or `:path`).
    public func connectHTTP2(_ target: String, headers: [HeaderField] = [], client: String = "127.0.0.1") throws -> PolicyOutcome {
        decide(
            try PolicyRequest.http2(
                method: "CONNECT", scheme: nil, authority: target, path: nil, protocolName: nil, headers: headers,
                client: ClientInfo(ip: client)))
    }

    /// An extended CONNECT (RFC 8441) with `:protocol`.
    public func extendedConnect(
        authority: String, path: String, protocolName: String, headers: [HeaderField] = [], client: String = "127.0.0.1"
    ) throws -> PolicyOutcome {
        decide(
            try PolicyRequest.http2(
                method: "CONNECT", scheme: "https", authority: authority, path: path, protocolName: protocolName,
                headers: headers, client: ClientInfo(ip: client)))
    }

    /// A GET: absolute-form over HTTP/1.1 (`http://host/path`, forward proxying), or over HTTP/2.
    public func get(_ url: String, http2: Bool = false, headers: [HeaderField] = [], client: String = "127.0.0.1") throws -> PolicyOutcome {
        decide(try PolicyRequest.parse(line: (http2 ? "h2 GET " : "GET ") + url, headers: headers, client: ClientInfo(ip: client)))
    }

    /// A request written as `moongate decide` takes it (`GET /path`, `h2 CONNECT host:443`, …).
    public func request(_ line: String, headers: [HeaderField] = [], client: String = "127.0.0.1") throws -> PolicyRequest {
        try PolicyRequest.parse(line: line, headers: headers, client: ClientInfo(ip: client))
    }

    // MARK: - Tests and fixtures

    /// Runs every plugin's own `tests` table and the spec's fixtures (malformed cases are failed results).
    public func runPluginTests() -> [CaseResult] {
        PolicyTestRunner.run(spec, instance: instance)
    }

    /// Replays a JSONL file of recorded requests with their expected decisions.
    public func replay(jsonlFile path: String) throws -> [CaseResult] {
        try replay(jsonl: try readFile(path), file: path)
    }

    /// Replays JSONL text.
    public func replay(jsonl text: String, file: String = "<jsonl>") throws(CaseError) -> [CaseResult] {
        try DecisionCase.parseJSONL(text, file: file).map { PolicyTestRunner.evaluateComposed($0, instance: instance, file: file) }
    }

    // MARK: - Costs

    /// Bytes the Lua heap grew by over `calls` decisions of `request`, measured after a full collection
    /// and a warm-up (which interns the strings the path reads). Zero on an allocation-free path.
    public func heapGrowth(of request: PolicyRequest, calls: Int = 10_000) -> Int {
        instance.collectGarbage()
        for _ in 0..<100 { _ = instance.decide(request) }
        let before = instance.luaHeapBytes
        for _ in 0..<calls { _ = instance.decide(request) }
        return instance.luaHeapBytes - before
    }

    /// Why `spec` would be rejected as a generation (compile, init, config or tests), or nil when it loads.
    public static func rejection(of spec: PolicySpec) -> PolicyLoadError? {
        do {
            _ = try PolicyGeneration.load(spec, id: 0)
            return nil
        } catch {
            return error
        }
    }
}

extension String {
    fileprivate func replacingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
