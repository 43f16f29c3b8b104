#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Yams

/// Reads and validates a YAML configuration. Every error names the file, the line and the key path.
public enum ConfigLoader {
    /// Loads the configuration at `path`. Throws ``ConfigError``.
    public static func load(path: String) throws -> MoongateConfiguration {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw ConfigError(file: path, line: nil, keyPath: "", message: "cannot read the file: \(error)")
        }
        return try parse(text, path: path)
    }

    /// Parses configuration text; relative paths are resolved against `path`'s folder.
    public static func parse(_ text: String, path: String) throws -> MoongateConfiguration {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ConfigError(file: path, line: nil, keyPath: "", message: "the file is empty")
            }
            root = node
        } catch let error as ConfigError {
            throw error
        } catch let error as YamlError {
            throw ConfigError(file: path, line: yamlLine(error), keyPath: "", message: "invalid YAML: \(error)")
        } catch {
            throw ConfigError(file: path, line: nil, keyPath: "", message: "invalid YAML: \(error)")
        }
        let folder = directory(of: path)
        let top = try ConfigNode(node: root, path: "", file: path).mapping(allowed: [
            "listeners", "clusters", "policy", "admin", "limits", "timeouts", "event_loop_threads", "resolver", "overload",
            "tunnel_tls", "http2",
        ])
        var config = MoongateConfiguration(
            sourcePath: path, listeners: [], clusters: [],
            policy: PolicyConfig(plugins: [], memoryCap: 16 << 20, instructionBudget: 1_000_000, watch: true, fixtures: []),
            admin: nil, limits: Limits(), timeouts: Timeouts(), eventLoopThreads: 0)
        if let node = top["listeners"] { config.listeners = try node.list().map { try parseListener($0, folder: folder) } }
        if let node = top["clusters"] { config.clusters = try node.list().map { try parseCluster($0, folder: folder) } }
        if let node = top["policy"] { config.policy = try parsePolicy(node, folder: folder) }
        if let node = top["admin"] { config.admin = try parseAdmin(node) }
        if let node = top["limits"] { config.limits = try parseLimits(node) }
        if let node = top["timeouts"] { config.timeouts = try parseTimeouts(node) }
        if let node = top["http2"] { config.http2 = try parseHTTP2(node) }
        if let node = top["event_loop_threads"] { config.eventLoopThreads = try node.int(in: 0...256) }
        if let node = top["resolver"] { config.resolver = try parseResolver(node) }
        if let node = top["overload"] { config.overload = try parseOverload(node) }
        if let node = top["tunnel_tls"] { config.tunnelTLS = try parseClusterTLS(node, folder: folder) }
        config.policy.clusterNames = config.clusters.map(\.name)
        try checkParents(config.clusters, node: top["clusters"])
        try checkUnique(config.listeners.map(\.name), what: "listener", node: top["listeners"])
        try checkUnique(config.clusters.map(\.name), what: "cluster", node: top["clusters"])
        try checkUnique(config.policy.plugins.map(\.name), what: "plugin", node: top["policy"])
        return config
    }

    private static func checkUnique(_ names: [String], what: String, node: ConfigNode?) throws {
        var seen = Set<String>()
        for name in names where !seen.insert(name).inserted {
            throw node?.error("two \(what)s are named '\(name)'")
                ?? ConfigError(file: "", line: nil, keyPath: "", message: "duplicate \(what) \(name)")
        }
    }

    private static func parseListener(_ node: ConfigNode, folder: String) throws -> ListenerConfig {
        let map = try node.mapping(allowed: ["name", "address", "port", "protocols", "tls"])
        guard let port = map["port"] else { throw node.error("a listener needs a port") }
        var listener = ListenerConfig(
            name: try map["name"]?.string() ?? "listener-\(try port.int(in: 0...65535))",
            address: try map["address"]?.string() ?? "127.0.0.1",
            port: try port.int(in: 0...65535),
            protocols: [.http1])
        if let protocols = map["protocols"] {
            listener.protocols = try protocols.list().map { item throws in
                let name = try item.string()
                guard let value = ListenerProtocol(rawValue: name) else {
                    let known = ListenerProtocol.allCases.map(\.rawValue).joined(separator: ", ")
                    throw item.error("unknown protocol '\(name)' (this build speaks: \(known))")
                }
                return value
            }
        }
        listener.tls = try map["tls"].map { try parseListenerTLS($0, folder: folder) }
        return listener
    }

    private static func parseCluster(_ node: ConfigNode, folder: String) throws -> ClusterConfig {
        let map = try node.mapping(allowed: ["name", "endpoints", "connect_timeout", "pool_size", "protocol", "tls", "via"])
        guard let name = map["name"] else { throw node.error("a cluster needs a name") }
        guard let endpointsNode = map["endpoints"] else { throw node.error("a cluster needs endpoints") }
        let endpoints = try endpointsNode.list().map { item throws in
            let text = try item.string()
            guard let endpoint = parseEndpoint(text) else {
                throw item.error("expected host:port (IPv6 in brackets), not '\(text)'")
            }
            return endpoint
        }
        guard !endpoints.isEmpty else { throw endpointsNode.error("a cluster needs at least one endpoint") }
        var cluster = ClusterConfig(
            name: try name.string(), endpoints: endpoints,
            connectTimeout: try map["connect_timeout"]?.duration() ?? .seconds(5),
            poolSize: try map["pool_size"]?.int(in: 0...10_000) ?? 64)
        cluster.tls = try map["tls"].flatMap { try parseClusterTLS($0, folder: folder) }
        cluster.via = try map["via"]?.string()
        if let node = map["protocol"] { cluster.upstreamProtocol = try parseClusterProtocol(node) }
        // ALPN must be able to confirm the codec the cluster speaks (its `protocol`).
        if let offered = cluster.tls?.alpn, let tlsNode = map["tls"] {
            switch cluster.upstreamProtocol {
            case .http2 where !offered.contains("h2"):
                throw tlsNode.error("cluster '\(cluster.name)' speaks HTTP/2 (protocol: http2): its alpn must offer h2")
            case .http1 where !offered.contains("http/1.1"):
                throw tlsNode.error(
                    "cluster '\(cluster.name)' speaks HTTP/1.1: its alpn must offer http/1.1 (protocol: http2 or auto for h2)")
            default: break
            }
        }
        if cluster.upstreamProtocol == .auto && cluster.tls == nil, let node = map["protocol"] {
            throw node.error("protocol: auto follows the server's ALPN answer, so cluster '\(cluster.name)' needs tls")
        }
        return cluster
    }

    /// Parses `host:port` or `[v6]:port`.
    public static func parseEndpoint(_ text: String) -> Endpoint? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port) else { return nil }
            return Endpoint(host: host, port: port)
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port), colon > text.startIndex
        else { return nil }
        return Endpoint(host: String(text[..<colon]), port: port)
    }

    private static func parsePolicy(_ node: ConfigNode, folder: String) throws -> PolicyConfig {
        let map = try node.mapping(allowed: [
            "plugins", "plugins_dir", "memory_cap", "instruction_budget", "watch", "fixtures", "allowed_addresses",
            "hook_deadline", "init_deadline",
        ])
        let pluginsDir = resolve(try map["plugins_dir"]?.string() ?? ".", against: folder)
        var policy = PolicyConfig(
            plugins: [], memoryCap: try map["memory_cap"]?.byteSize() ?? 16 << 20,
            instructionBudget: try map["instruction_budget"]?.int(in: 1000...1_000_000_000) ?? 1_000_000,
            watch: try map["watch"]?.bool() ?? true,
            fixtures: try map["fixtures"]?.stringList().map { resolve($0, against: folder) } ?? [])
        policy.folder = folder
        if let list = map["allowed_addresses"] { policy.allowedAddresses = try list.stringList() }
        if let node = map["hook_deadline"] { policy.hookDeadline = try deadline(node, in: .microseconds(100)...(.seconds(10))) }
        if let node = map["init_deadline"] { policy.initDeadline = try deadline(node, in: .milliseconds(1)...(.seconds(60))) }
        if policy.memoryCap < 1 << 20 { throw map["memory_cap"]!.error("the memory cap must be at least 1MiB") }
        guard let plugins = map["plugins"] else { throw node.error("the policy needs a list of plugins") }
        for (index, item) in try plugins.list().enumerated() {
            let entry = try item.mapping(allowed: ["name", "file", "priority", "config", "hook_deadline"])
            guard let name = entry["name"] else { throw item.error("a plugin needs a name") }
            let pluginName = try name.string()
            let file = try entry["file"].map { n throws in resolve(try n.string(), against: folder) }
                ?? "\(pluginsDir)/\(pluginName).lua"
            policy.plugins.append(
                PluginConfig(
                    name: pluginName, file: file,
                    priority: try entry["priority"]?.int(in: -1_000_000...1_000_000) ?? (index + 1) * 10,
                    config: entry["config"]?.value() ?? .table([]),
                    hookDeadline: try entry["hook_deadline"].map { n throws in try deadline(n, in: .microseconds(100)...(.seconds(10))) }))
        }
        return policy
    }

    /// A deadline within `range` (`250ms`, `2s`; a bare number means seconds).
    private static func deadline(_ node: ConfigNode, in range: ClosedRange<Duration>) throws(ConfigError) -> Duration {
        let value = try node.duration()
        guard range.contains(value) else {
            throw node.error("a deadline must be from \(range.lowerBound) to \(range.upperBound), not \(value)")
        }
        return value
    }

    private static func parseAdmin(_ node: ConfigNode) throws(ConfigError) -> AdminConfig {
        let map = try node.mapping(allowed: ["address", "port"])
        return AdminConfig(
            address: try map["address"]?.string() ?? "127.0.0.1", port: try map["port"]?.int(in: 0...65535) ?? 9901)
    }

    private static func parseLimits(_ node: ConfigNode) throws(ConfigError) -> Limits {
        let map = try node.mapping(allowed: [
            "max_header_bytes", "max_header_count", "max_request_line_bytes", "max_header_field_bytes",
            "max_connections", "max_tunnels", "max_tunnels_per_client",
        ])
        var limits = Limits()
        if let n = map["max_header_bytes"] { limits.maxHeaderBytes = try n.byteSize() }
        if let n = map["max_header_count"] { limits.maxHeaderCount = try n.int(in: 1...10_000) }
        if let n = map["max_request_line_bytes"] { limits.maxRequestLineBytes = try n.byteSize() }
        if let n = map["max_header_field_bytes"] { limits.maxHeaderFieldBytes = try n.byteSize() }
        if let n = map["max_connections"] { limits.maxConnections = try n.int(in: 1...1_000_000) }
        if let n = map["max_tunnels"] { limits.maxTunnels = try n.int(in: 1...1_000_000) }
        if let n = map["max_tunnels_per_client"] { limits.maxTunnelsPerClient = try n.int(in: 1...1_000_000) }
        return limits
    }

    private static func parseTimeouts(_ node: ConfigNode) throws(ConfigError) -> Timeouts {
        let map = try node.mapping(allowed: Set<String>([
            "request_headers", "stream_idle", "upstream_connect", "upstream_response", "tunnel_idle",
            "tunnel_max_duration", "drain", "tls_handshake",
        ]).union(clientTimeoutKeys))
        var t = Timeouts()
        t.client = try parseClientTimeouts(map)
        if let n = map["request_headers"] { t.requestHeaders = try n.duration() }
        if let n = map["stream_idle"] { t.streamIdle = try n.duration() }
        if let n = map["upstream_connect"] { t.upstreamConnect = try n.duration() }
        if let n = map["upstream_response"] { t.upstreamResponse = try n.duration() }
        if let n = map["tunnel_idle"] { t.tunnelIdle = try n.duration() }
        if let n = map["tunnel_max_duration"] { t.tunnelMaxDuration = try n.duration() }
        if let n = map["drain"] { t.drain = try n.duration() }
        if let n = map["tls_handshake"] { t.tlsHandshake = try n.duration() }
        return t
    }

    private static func yamlLine(_ error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func resolve(_ path: String, against folder: String) -> String {
        path.hasPrefix("/") ? path : (folder == "." ? path : "\(folder)/\(path)")
    }
}

/// Reads a whole file as UTF-8.
public func readFile(_ path: String) throws(ConfigError) -> String {
    guard let file = fopen(path, "rb") else {
        throw ConfigError(file: path, line: nil, keyPath: "", message: String(cString: strerror(errno)))
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if n < chunk.count { break }
    }
    return String(decoding: bytes, as: UTF8.self)
}
