import NIOCore
import NIOPosix
import Synchronization

/// Runs system lookups on a dedicated thread pool, one at a time per name: concurrent lookups of
/// the same name share one `getaddrinfo` call, and its answer is reused for a short time. So a
/// burst of requests to one slow name holds one lookup thread, not all of them, and the other
/// names keep resolving.
final class LookupCache: Sendable {
    private struct Entry {
        let addresses: [SocketAddress]
        let expires: NIODeadline
    }

    /// The requests waiting for one name, and when the last of them stops waiting.
    private struct Waiting {
        var promises: [EventLoopPromise<[SocketAddress]>]
        var until: NIODeadline
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var waiting: [String: Waiting] = [:]
    }

    private let pool: NIOThreadPool
    private let ttl: TimeAmount
    private let capacity: Int
    private let state = Mutex(State())

    /// - Parameters:
    ///   - pool: the lookup threads (started by the caller).
    ///   - ttl: how long an answer is reused (zero: never).
    ///   - capacity: names kept at most.
    init(pool: NIOThreadPool, ttl: TimeAmount, capacity: Int) {
        self.pool = pool
        self.ttl = ttl
        self.capacity = max(capacity, 1)
    }

    /// Every address of `host` (port 0), completed on `eventLoop`; a cached answer at once, a lookup
    /// within `timeout` or ``DialError/lookupTimedOut(_:)`` (the lookup itself runs on).
    func addresses(of host: String, on eventLoop: any EventLoop, timeout: TimeAmount) -> EventLoopFuture<[SocketAddress]> {
        enum Step {
            case cached([SocketAddress])
            case joined
            case lookUp
        }
        let now = NIODeadline.now()
        if ttl > .zero, let cached = state.withLock({ $0.entries[host] }), cached.expires > now {
            return eventLoop.makeSucceededFuture(cached.addresses)
        }
        let promise = eventLoop.makePromise(of: [SocketAddress].self)
        let step = state.withLock { state -> Step in
            if let entry = state.entries[host], entry.expires > now { return .cached(entry.addresses) }
            if state.waiting[host] != nil {
                state.waiting[host]!.promises.append(promise)
                state.waiting[host]!.until = now + timeout
                return .joined
            }
            state.waiting[host] = Waiting(promises: [promise], until: now + timeout)
            return .lookUp
        }
        switch step {
        case .cached(let addresses):
            promise.succeed(addresses)
            return promise.futureResult
        case .joined:
            break
        case .lookUp:
            pool.submit { work in
                // A lookup nobody waits for any more (it queued past every waiter's timeout, as
                // under a flood of new names) is dropped rather than run late.
                let stale = self.state.withLock { ($0.waiting[host]?.until ?? .distantPast) < .now() }
                let result: Result<[SocketAddress], any Error> =
                    work == .active && !stale
                    ? Result { try NameLookup.addresses(of: host) } : .failure(DialError.lookupTimedOut(host))
                self.finish(host, result)
            }
        }
        // A late answer after the timeout is ignored (a promise completes once).
        let timer = eventLoop.scheduleTask(in: timeout) { promise.fail(DialError.lookupTimedOut(host)) }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    private func finish(_ host: String, _ result: Result<[SocketAddress], any Error>) {
        let expires = NIODeadline.now() + ttl
        let waiters = state.withLock { state -> [EventLoopPromise<[SocketAddress]>] in
            if case .success(let addresses) = result, ttl > .zero {
                if state.entries.count >= capacity {
                    let now = NIODeadline.now()
                    state.entries = state.entries.filter { $0.value.expires > now }
                    if state.entries.count >= capacity { state.entries.remove(at: state.entries.startIndex) }
                }
                state.entries[host] = Entry(addresses: addresses, expires: expires)
            }
            return state.waiting.removeValue(forKey: host)?.promises ?? []
        }
        for promise in waiters { promise.completeWith(result) }
    }
}
