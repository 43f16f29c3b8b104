/// The overload guard (`overload:` in the config), in the spirit of Envoy's overload manager.
///
/// Each resource has a threshold; past any of them Moongate refuses new requests with `503` and a
/// `Retry-After` header and sheds idle keep-alive connections, until every resource is back under
/// its recovery level (a fraction of its threshold, so the guard does not flap). A resource without
/// a threshold is not watched; with none, the guard is off.
public struct OverloadConfig: Sendable {
    /// Open client connections (`overload.max_connections`): a soft threshold under
    /// `limits.max_connections`, which refuses connections outright.
    public var maxConnections: Int?
    /// Bytes waiting in the proxy's socket write buffers, client and upstream connections together
    /// (`overload.max_buffered_bytes`).
    public var maxBufferedBytes: Int?
    /// Resident memory of the process (`overload.max_memory`), read from `/proc/self/statm`.
    public var maxMemory: Int?
    /// How often memory and buffered bytes are sampled (`overload.check_interval`, 250 ms).
    public var checkInterval: Duration = .milliseconds(250)
    /// The `Retry-After` value of a refused request, in seconds (`overload.retry_after`, 5).
    public var retryAfterSeconds = 5
    /// A resource stops being overloaded once it is at or under this fraction of its threshold
    /// (`overload.recover_ratio`, 0.9).
    public var recoverRatio = 0.9
    public init() {}

    /// True when any resource is watched.
    public var isEnabled: Bool { maxConnections != nil || maxBufferedBytes != nil || maxMemory != nil }
}
