import MoongatePolicy
import NIOCore
import Synchronization

/// The live traces of `GET /trace`: who listens, with which filter, and the lines sent to them.
///
/// Off unless someone listens: the request path reads one relaxed atomic (``isActive``) per
/// request, and only when it is set does it check the filters and give the request a
/// ``PolicyTrace`` to fill. A request is traced when its head matches some listener; its line is
/// sent, when it ends, to each listener whose filter (decision included) it matches and whose rate
/// allows it (lines over the rate are dropped and counted).
public final class TraceHub: Sendable {
    private let listening = Atomic<Int>(0)
    private let listeners = Mutex<[Int: TraceListener]>([:])
    private let nextID = Atomic<Int>(1)

    init() {}

    /// True while someone listens (one relaxed atomic load: the only cost when no one does).
    @inline(__always)
    var isActive: Bool { listening.load(ordering: .relaxed) > 0 }

    /// Gives `request` a trace when a listener's filter matches its head.
    func begin(_ request: inout PolicyRequest) {
        let candidates = listeners.withLock { Array($0.values) }
        let path = request.path
        for listener in candidates
        where listener.filter.matchesHead(client: request.client.ip, method: request.method, host: request.host, path: path) {
            request.trace = PolicyTrace()
            return
        }
    }

    /// Registers a listener; `send` writes one line and returns false when the line could not be
    /// written (the listener's connection is not writable: the line is dropped).
    /// - Returns: the listener's id, for ``unsubscribe(_:)``.
    func subscribe(_ filter: TraceFilter, send: @escaping @Sendable (String) -> Bool) -> Int {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let listener = TraceListener(filter: filter, send: send)
        listeners.withLock { $0[id] = listener }
        listening.wrappingAdd(1, ordering: .relaxed)
        return id
    }

    /// Removes a listener.
    /// - Returns: how many lines it was sent and how many were dropped, or nil if it was gone already.
    @discardableResult
    func unsubscribe(_ id: Int) -> (sent: Int, dropped: Int)? {
        guard let listener = listeners.withLock({ $0.removeValue(forKey: id) }) else { return nil }
        listening.wrappingSubtract(1, ordering: .relaxed)
        return listener.totals
    }

    /// A traced request ended: its line goes to every listener it matches.
    func finish(
        _ trace: PolicyTrace, request: PolicyRequest, outcome: PolicyOutcome?, status: Int, reason: RefusalReason?,
        local: Bool, client: ClientInfo, bytesIn: Int, bytesOut: Int, since start: NIODeadline
    ) {
        if trace.note("floor") == nil, let floor = TraceLine.floorEffect(request: request, outcome: outcome, status: status, reason: reason, local: local) {
            trace.note("floor", floor)
        }
        let targets = matching(request: request, decision: outcome?.decision, reason: reason?.rawValue)
        guard !targets.isEmpty else { return }
        let line = TraceLine.json(
            trace.record, request: request, outcome: outcome, status: status, reason: reason, client: client, bytesIn: bytesIn,
            bytesOut: bytesOut, milliseconds: Double((NIODeadline.now() - start).nanoseconds) / 1_000_000)
        for listener in targets { listener.offer(line) }
    }

    /// A request refused before policy (malformed, or no policy): a line without policy steps.
    func refused(status: Int, reason: RefusalReason, detail: String, client: ClientInfo, method: String?, target: String?) {
        guard isActive else { return }
        let candidates = listeners.withLock { Array($0.values) }
        let targets = candidates.filter {
            (($0.filter.client?.contains(client.ip)) ?? true) && $0.filter.host == nil && $0.filter.pathPrefix == nil
                && ($0.filter.method == nil || $0.filter.method == method)
                && $0.filter.matchesDecision(nil, reason: reason.rawValue)
        }
        guard !targets.isEmpty else { return }
        let line = TraceLine.refused(status: status, reason: reason, detail: detail, client: client, method: method, target: target)
        for listener in targets { listener.offer(line) }
    }

    private func matching(request: PolicyRequest, decision: Decision?, reason: String?) -> [TraceListener] {
        let candidates = listeners.withLock { Array($0.values) }
        return candidates.filter {
            $0.filter.matchesHead(client: request.client.ip, method: request.method, host: request.host, path: request.path)
                && $0.filter.matchesDecision(decision, reason: reason)
        }
    }
}

/// One `/trace` listener: its filter, its rate (a token bucket of `rate` lines a second, bursts of
/// `rate`) and where its lines go.
final class TraceListener: Sendable {
    let filter: TraceFilter
    private let send: @Sendable (String) -> Bool
    private struct Bucket {
        var tokens: Double
        var last: NIODeadline
        var sent = 0
        var dropped = 0
    }
    private let bucket: Mutex<Bucket>

    init(filter: TraceFilter, send: @escaping @Sendable (String) -> Bool) {
        self.filter = filter
        self.send = send
        self.bucket = Mutex(Bucket(tokens: Double(filter.rate), last: .now()))
    }

    /// Sends `line` if the rate allows it (and the connection takes it); drops and counts it otherwise.
    func offer(_ line: String) {
        let rate = Double(filter.rate)
        let allowed = bucket.withLock { b -> Bool in
            let now = NIODeadline.now()
            b.tokens = min(rate, b.tokens + Double((now - b.last).nanoseconds) / 1_000_000_000 * rate)
            b.last = now
            guard b.tokens >= 1 else {
                b.dropped += 1
                return false
            }
            b.tokens -= 1
            return true
        }
        guard allowed else { return }
        let written = send(line)
        bucket.withLock { if written { $0.sent += 1 } else { $0.dropped += 1 } }
    }

    var totals: (sent: Int, dropped: Int) { bucket.withLock { ($0.sent, $0.dropped) } }
}
