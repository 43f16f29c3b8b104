#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Yams

extension ConfigLoader {
    /// Parses `resolver:` (threads, cache_ttl, cache_size, hosts).
    static func parseResolver(_ node: ConfigNode) throws(ConfigError) -> ResolverConfig {
        let map = try node.mapping(allowed: ["threads", "cache_ttl", "cache_size", "hosts"])
        var resolver = ResolverConfig()
        if let n = map["threads"] { resolver.threads = try n.int(in: 1...256) }
        if let n = map["cache_ttl"] {
            resolver.cacheTTL = try n.duration()
            guard resolver.cacheTTL <= .seconds(3600) else { throw n.error("cache_ttl must be at most 1h") }
        }
        if let n = map["cache_size"] { resolver.cacheSize = try n.int(in: 1...1_000_000) }
        if let hosts = map["hosts"] {
            for (name, list) in try hosts.entries() {
                guard !name.contains(where: { $0 == ":" || $0 == "/" || $0 == "[" || $0.isWhitespace }) else {
                    throw list.error("'\(name)' is not a host name (no port, brackets or spaces)")
                }
                let addresses = try list.stringList()
                guard !addresses.isEmpty else { throw list.error("'\(name)' needs at least one address") }
                for address in addresses where !isIPLiteral(address) {
                    throw list.error("'\(address)' is not an IP address (resolver.hosts maps names to addresses)")
                }
                resolver.hosts[normalisedName(name)] = addresses
            }
        }
        return resolver
    }

    /// A name as target authorities carry it: lower case, without a trailing dot.
    static func normalisedName(_ name: String) -> String {
        let lower = name.lowercased()
        return lower.hasSuffix(".") ? String(lower.dropLast()) : lower
    }

    private static func isIPLiteral(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}

extension ConfigNode {
    /// A mapping's entries in file order, any key allowed (a duplicate key is an error).
    func entries() throws(ConfigError) -> [(String, ConfigNode)] {
        guard case .mapping(let map) = node else { throw error("expected a mapping") }
        var out: [(String, ConfigNode)] = []
        var seen = Set<String>()
        for (keyNode, value) in map {
            guard let key = keyNode.string, !key.isEmpty else { throw error("keys must be strings") }
            let entry = ConfigNode(node: value, path: "\(path).\(key)", file: file)
            guard seen.insert(key).inserted else {
                throw ConfigError(file: file, line: keyNode.mark?.line, keyPath: entry.path, message: "duplicate key")
            }
            out.append((key, entry))
        }
        return out
    }
}
