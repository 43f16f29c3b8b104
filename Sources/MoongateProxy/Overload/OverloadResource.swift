/// A resource the overload guard watches.
public enum OverloadResource: Int, CaseIterable, Sendable {
    /// Open client connections.
    case connections
    /// Bytes waiting in the socket write buffers of client and upstream connections.
    case bufferedBytes
    /// Resident memory of the process.
    case memory

    /// The `resource` label of its metrics and log lines.
    public var label: String {
        switch self {
        case .connections: "connections"
        case .bufferedBytes: "buffered_bytes"
        case .memory: "memory"
        }
    }

    var bit: Int { 1 << rawValue }
}

/// One resource's state: overloaded past its threshold, and again free only at or under its
/// recovery level (hysteresis, so the guard does not flap around the threshold).
struct ResourceLevel {
    let threshold: Int
    let recoverAt: Int
    var overloaded = false
    var value = 0

    init(threshold: Int, recoverRatio: Double) {
        self.threshold = threshold
        self.recoverAt = Int((Double(threshold) * recoverRatio).rounded(.down))
    }

    /// Records a new value. - Returns: true when the resource entered or left overload.
    mutating func update(_ value: Int) -> Bool {
        self.value = value
        if !overloaded && value > threshold {
            overloaded = true
            return true
        }
        if overloaded && value <= recoverAt {
            overloaded = false
            return true
        }
        return false
    }
}
