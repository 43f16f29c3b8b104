extension ConfigLoader {
    /// The `timeouts` keys read by ``parseClientTimeouts(_:)``.
    static let clientTimeoutKeys: Set<String> = [
        "request_body_idle", "request_body", "keepalive_idle", "response_write_idle",
    ]

    /// The shortest and longest value a client deadline may take: zero would refuse every request,
    /// and a day is past any use a deadline has.
    static let clientTimeoutRange: ClosedRange<Duration> = .milliseconds(10)...(.seconds(86_400))

    /// Reads the client deadlines from the entries of a `timeouts` mapping; a value that is not a
    /// duration, or lies outside ``clientTimeoutRange``, is an error naming the file and line.
    static func parseClientTimeouts(_ map: [String: ConfigNode]) throws(ConfigError) -> ClientTimeouts {
        var client = ClientTimeouts()
        if let n = map["request_body_idle"] { client.requestBodyIdle = try clientTimeout(n) }
        if let n = map["request_body"] { client.requestBody = try clientTimeout(n) }
        if let n = map["keepalive_idle"] { client.keepaliveIdle = try clientTimeout(n) }
        if let n = map["response_write_idle"] { client.responseWriteIdle = try clientTimeout(n) }
        return client
    }

    private static func clientTimeout(_ node: ConfigNode) throws(ConfigError) -> Duration {
        let value = try node.duration()
        guard clientTimeoutRange.contains(value) else {
            throw node.error("a timeout must be from 10ms to 24h, not \(try node.string())")
        }
        return value
    }
}
