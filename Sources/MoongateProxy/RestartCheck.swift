import MoongateConfig

/// What a reload cannot apply to a running process: the listeners (their sockets are bound at
/// start), the admin listener, the number of event loops, the resolver (its lookup threads) and
/// TLS settings (contexts are built once: a cluster's `tls`, `tunnel_tls`; certificate *files*
/// reload by themselves). A reload whose config changes any of
/// them is refused as a whole, with "restart required", rather than half-applied: the running
/// generation stays, and the operator restarts to apply it.
public enum RestartCheck {
    /// The fixed settings that differ between the running configuration and a new one, each named
    /// for the operator (empty: the new configuration can be reloaded).
    public static func changes(from running: MoongateConfiguration, to new: MoongateConfiguration) -> [String] {
        var changed: [String] = []
        let before = Dictionary(running.listeners.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let after = Dictionary(new.listeners.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for name in before.keys.sorted() where after[name] == nil { changed.append("listener \(name) removed") }
        for name in after.keys.sorted() {
            guard let old = before[name] else {
                changed.append("listener \(name) added")
                continue
            }
            if old != after[name] { changed.append("listener \(name) changed") }
        }
        if running.admin != new.admin { changed.append("admin changed") }
        if running.eventLoopThreads != new.eventLoopThreads { changed.append("event_loop_threads changed") }
        if running.resolver != new.resolver { changed.append("resolver changed") }
        // Clusters reload, but their TLS contexts are built once, at start.
        let tlsBefore = Dictionary(running.clusters.map { ($0.name, $0.tls) }, uniquingKeysWith: { first, _ in first })
        for cluster in new.clusters where cluster.tls != (tlsBefore[cluster.name] ?? nil) {
            changed.append("cluster \(cluster.name) tls changed")
        }
        if running.tunnelTLS != new.tunnelTLS { changed.append("tunnel_tls changed") }
        return changed
    }

    /// The message a refused reload carries: `restart required: listeners changed (listener
    /// forward changed)`.
    public static func message(_ changes: [String]) -> String {
        let listeners = changes.contains { $0.hasPrefix("listener ") }
        return "restart required: \(listeners ? "listeners" : "fixed settings") changed (\(changes.joined(separator: "; ")))"
    }
}
