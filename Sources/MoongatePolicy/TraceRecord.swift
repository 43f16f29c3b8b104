import Synchronization

/// How policy decided one request, step by step: every hook called (in order) with its answer,
/// header edits and time, the composition step that chose the result, and what the sanitization
/// floor removed. `moongate decide --trace` prints one; the admin listener's `/trace` streams them.
///
/// Collected only when a request carries one (``PolicyRequest/trace``): nothing is recorded, and no
/// clock is read for it, otherwise. The proxy adds what happens after policy (the address floor,
/// the status, the bytes) as notes.
public final class PolicyTrace: Sendable {
    /// One hook call.
    public struct Call: Sendable, Hashable {
        public let plugin: String
        /// `route`, `connect`, `sanitize_request`, …
        public let hook: String
        /// The answer: a decision in `decide`'s syntax (`route api`, `deny 403`), `nil` for no
        /// opinion, `ok` for a sanitize hook, or `fault <kind>: <message>`.
        public let answer: String
        /// Time on the event loop, in nanoseconds.
        public let nanoseconds: UInt64
        /// The header edits this call made (sanitize hooks) or the response headers of a deny/respond.
        public let edits: [HeaderEdit]
    }

    /// Everything recorded so far.
    public struct Record: Sendable {
        public var calls: [Call] = []
        /// The composition steps, in order (`connect: deny wins (plugin x)`, …).
        public var composition: [String] = []
        /// Every request-header edit, in the order applied.
        public var edits: [HeaderEdit] = []
        /// Header names the sanitization floor removed from what goes upstream.
        public var floorRemoved: [String] = []
        /// What the proxy adds after policy (`floor`, `upstream`, `status`, …), in order.
        public var notes: [(key: String, value: String)] = []
    }

    private let state = Mutex(Record())

    /// Creates an empty trace; put it on a request (``PolicyRequest/trace``) before evaluating it.
    public init() {}

    /// A copy of what has been recorded.
    public var record: Record { state.withLock { $0 } }

    func add(_ call: Call) { state.withLock { $0.calls.append(call) } }

    func step(_ text: String) { state.withLock { $0.composition.append(text) } }

    func sanitized(edits: [HeaderEdit], floorRemoved: [String]) {
        state.withLock {
            $0.edits = edits
            $0.floorRemoved = floorRemoved
        }
    }

    /// Adds (or replaces) a note: what happened after policy.
    public func note(_ key: String, _ value: String) {
        state.withLock { record in
            if let i = record.notes.firstIndex(where: { $0.key == key }) {
                record.notes[i].value = value
            } else {
                record.notes.append((key, value))
            }
        }
    }

    /// The value of a note, if set.
    public func note(_ key: String) -> String? {
        state.withLock { $0.notes.first { $0.key == key }?.value }
    }
}

extension PolicyTrace.Record {
    /// The text `moongate decide --trace` prints: one line per call, then the composition steps, the
    /// edits, the floor's effect and the notes.
    public var lines: [String] {
        var out: [String] = []
        for (i, call) in calls.enumerated() {
            out.append("  \(i + 1). \(call.plugin).\(call.hook) -> \(call.answer)  (\(Self.micros(call.nanoseconds)))")
            for edit in call.edits { out.append("       \(edit)") }
        }
        if calls.isEmpty { out.append("  (no hook called)") }
        for step in composition { out.append("  composition: \(step)") }
        if !floorRemoved.isEmpty { out.append("  sanitization floor removed: \(floorRemoved.joined(separator: ", "))") }
        for note in notes { out.append("  \(note.key): \(note.value)") }
        return out
    }

    /// Nanoseconds as microseconds with one decimal (`12.3 µs`).
    static func micros(_ ns: UInt64) -> String {
        let tenths = (ns + 50) / 100
        return "\(tenths / 10).\(tenths % 10) µs"
    }
}
