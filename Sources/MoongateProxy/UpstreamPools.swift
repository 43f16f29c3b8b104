import Logging
import MoongateConfig
import NIOCore

/// Idle keep-alive upstream connections of one event loop, one ``IdleConnections`` per upstream
/// key (`host:port`, or a cluster's key). Only touched on its loop: no locks.
final class UpstreamPools {
    private var byKey: [String: IdleConnections] = [:]

    /// The idle connections to `key` (made on first use). An exchange looks them up once.
    func connections(to key: String) -> IdleConnections {
        if let idle = byKey[key] { return idle }
        let idle = IdleConnections()
        byKey[key] = idle
        return idle
    }

    /// Closes and forgets the idle connections of every key that `stale` accepts.
    func closeIdle(where stale: (String) -> Bool) {
        for (key, idle) in byKey where stale(key) {
            idle.closeAll()
            byKey[key] = nil
        }
    }
}

/// The idle connections to one upstream, kept as their handlers (no pipeline lookup per request).
final class IdleConnections {
    private var handlers: [UpstreamHandler] = []

    /// An idle connection, if one is open; it leaves the pool.
    func acquire() -> UpstreamHandler? {
        while let handler = handlers.popLast() {
            handler.idlePool = nil
            if handler.isOpen { return handler }
        }
        return nil
    }

    /// Keeps the connection for reuse (at most `limit` idle); closes it otherwise.
    func release(_ handler: UpstreamHandler, limit: Int) {
        guard handler.isOpen, handlers.count < limit else {
            handler.close()
            return
        }
        handler.idlePool = self
        handlers.append(handler)
    }

    /// Closes every idle connection.
    func closeAll() {
        let idle = handlers
        handlers = []
        for handler in idle {
            handler.idlePool = nil
            handler.close()
        }
    }

    /// Forgets a connection that closed while idle.
    func remove(_ handler: UpstreamHandler) {
        handlers.removeAll { $0 === handler }
    }
}
