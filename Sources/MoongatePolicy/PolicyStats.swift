import LuaKit
import Synchronization

/// Script faults counted per plugin, hook and kind, shared by every instance of every generation.
/// Faults are rare, so a lock on that path only is cheap; the proxy also forwards each fault to its
/// metrics through `onFault`.
public final class PolicyStats: Sendable {
    /// A counter key.
    public struct Key: Hashable, Sendable {
        public let plugin: String
        public let hook: String
        public let kind: String
    }

    private let counts = Mutex<[Key: Int]>([:])
    private let observer: (@Sendable (PolicyFault) -> Void)?
    /// Where instances record their hooks' latencies (the proxy's metrics); nil records nothing.
    public let hookLatencies: HookLatencies?

    /// Creates the counters; `onFault` is called once per fault (for metrics and logs).
    public init(hookLatencies: HookLatencies? = nil, onFault: (@Sendable (PolicyFault) -> Void)? = nil) {
        self.observer = onFault
        self.hookLatencies = hookLatencies
    }

    func record(_ fault: PolicyFault) {
        let key = Key(plugin: fault.plugin, hook: fault.hook, kind: fault.kind.description)
        counts.withLock { $0[key, default: 0] += 1 }
        observer?(fault)
    }

    /// Faults of one plugin's hook so far (every kind).
    public func faults(plugin: String, hook: String) -> Int {
        counts.withLock { $0.filter { $0.key.plugin == plugin && $0.key.hook == hook }.values.reduce(0, +) }
    }

    /// All counters.
    public var snapshot: [Key: Int] { counts.withLock { $0 } }
}
