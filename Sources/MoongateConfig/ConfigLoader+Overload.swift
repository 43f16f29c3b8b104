import Yams

extension ConfigLoader {
    /// Parses `overload:` (max_connections, max_buffered_bytes, max_memory, check_interval,
    /// retry_after, recover_ratio).
    static func parseOverload(_ node: ConfigNode) throws(ConfigError) -> OverloadConfig {
        let map = try node.mapping(allowed: [
            "max_connections", "max_buffered_bytes", "max_memory", "check_interval", "retry_after", "recover_ratio",
        ])
        var overload = OverloadConfig()
        if let n = map["max_connections"] { overload.maxConnections = try n.int(in: 1...1_000_000) }
        if let n = map["max_buffered_bytes"] {
            overload.maxBufferedBytes = try n.byteSize()
            guard overload.maxBufferedBytes! > 0 else { throw n.error("max_buffered_bytes must be above 0") }
        }
        if let n = map["max_memory"] {
            overload.maxMemory = try n.byteSize()
            guard overload.maxMemory! > 0 else { throw n.error("max_memory must be above 0") }
        }
        if let n = map["check_interval"] {
            overload.checkInterval = try n.duration()
            guard (Duration.milliseconds(10)...Duration.seconds(60)).contains(overload.checkInterval) else {
                throw n.error("check_interval must be from 10ms to 60s")
            }
        }
        if let n = map["retry_after"] { overload.retryAfterSeconds = try n.int(in: 0...86_400) }
        if let n = map["recover_ratio"] {
            guard case .scalar = n.node, let ratio = n.node.float, ratio > 0, ratio <= 1 else {
                throw n.error("recover_ratio must be a number above 0 and at most 1")
            }
            overload.recoverRatio = ratio
        }
        return overload
    }
}
