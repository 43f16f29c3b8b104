import NIOSSL

/// The certificate choice of one TLS listener, frozen: exact names, then `*.` wildcards (one label),
/// then the default pair. Built once per (re)load; a handshake does one or two dictionary look-ups.
struct ServerNameTable: Sendable {
    private let exact: [String: Int]
    /// Keyed by what follows `*.`.
    private let wildcard: [String: Int]
    private let contexts: [NIOSSLContext]
    private let defaultIndex: Int

    /// Builds the table of `pairs` (nil: a pair never loaded, left out); earlier pairs win a name.
    init(pairs: [CertificatePair?], defaultIndex: Int) {
        var exact: [String: Int] = [:]
        var wildcard: [String: Int] = [:]
        var contexts: [NIOSSLContext] = []
        var fallback = 0
        for (index, pair) in pairs.enumerated() {
            guard let pair else { continue }
            let slot = contexts.count
            contexts.append(pair.context)
            if index == defaultIndex { fallback = slot }
            for name in pair.serverNames {
                if name.hasPrefix("*.") {
                    if wildcard[String(name.dropFirst(2))] == nil { wildcard[String(name.dropFirst(2))] = slot }
                } else if exact[name] == nil {
                    exact[name] = slot
                }
            }
        }
        self.exact = exact
        self.wildcard = wildcard
        self.contexts = contexts
        self.defaultIndex = fallback
    }

    /// The context for a client's SNI name (nil or unknown: the default pair's).
    func context(for serverName: String?) -> NIOSSLContext {
        guard let serverName else { return contexts[defaultIndex] }
        let name = serverName.lowercased()
        if let slot = exact[name] { return contexts[slot] }
        if let dot = name.firstIndex(of: "."), let slot = wildcard[String(name[name.index(after: dot)...])] {
            return contexts[slot]
        }
        return contexts[defaultIndex]
    }
}
