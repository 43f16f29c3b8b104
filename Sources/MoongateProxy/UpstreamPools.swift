import Logging
import MoongateConfig
import NIOCore

/// Idle keep-alive upstream connections of one event loop, by upstream key (`host:port`).
/// Only touched on its loop: no locks. Each key's list is modified in place (no copy per
/// acquire or release).
final class UpstreamPools {
    private var idle: [String: [any Channel]] = [:]

    /// An idle connection to `key`, if one is open.
    func acquire(_ key: String) -> (any Channel)? {
        while let channel = idle[key]?.popLast() {
            if channel.isActive { return channel }
        }
        return nil
    }

    /// Keeps `channel` for reuse (at most `limit` idle per key); closes it otherwise.
    func release(_ channel: any Channel, key: String, limit: Int) {
        guard channel.isActive, idle[key, default: []].count < limit else {
            channel.close(promise: nil)
            return
        }
        idle[key, default: []].append(channel)
    }

    /// Forgets a connection that closed while idle.
    func remove(_ channel: any Channel, key: String) {
        idle[key]?.removeAll { $0 === channel }
    }
}
