import Logging
import MoongateConfig
import NIOCore

/// Idle keep-alive upstream connections of one event loop, by upstream key (`host:port`, or a
/// cluster's key), kept as their handlers (no pipeline lookup per request). Only touched on its
/// loop: no locks. Each key's list is modified in place (no copy per acquire or release).
final class UpstreamPools {
    private var idle: [String: [UpstreamHandler]] = [:]

    /// An idle connection to `key`, if one is open; it leaves the pool.
    func acquire(_ key: String) -> UpstreamHandler? {
        while let handler = idle[key]?.popLast() {
            handler.pools = nil
            if handler.isOpen { return handler }
        }
        return nil
    }

    /// Keeps the connection for reuse (at most `limit` idle per key); closes it otherwise.
    func release(_ handler: UpstreamHandler, key: String, limit: Int) {
        guard handler.isOpen, idle[key, default: []].count < limit else {
            handler.close()
            return
        }
        handler.pools = self
        idle[key, default: []].append(handler)
    }

    /// Forgets a connection that closed while idle.
    func remove(_ handler: UpstreamHandler, key: String) {
        idle[key]?.removeAll { $0 === handler }
    }
}
