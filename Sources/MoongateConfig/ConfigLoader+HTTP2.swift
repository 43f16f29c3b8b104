extension ConfigLoader {
    /// The `http2:` section. Windows and frame sizes are checked against RFC 9113 §6.5.2.
    static func parseHTTP2(_ node: ConfigNode) throws(ConfigError) -> HTTP2Config {
        let map = try node.mapping(allowed: [
            "max_concurrent_streams", "initial_stream_window", "initial_connection_window", "max_frame_size",
            "max_header_list_size", "extended_connect",
        ])
        var http2 = HTTP2Config()
        if let n = map["max_concurrent_streams"] { http2.maxConcurrentStreams = try n.int(in: 1...10_000) }
        if let n = map["initial_stream_window"] { http2.initialStreamWindow = try sized(n, in: 1...0x7fff_ffff) }
        if let n = map["initial_connection_window"] {
            http2.initialConnectionWindow = try sized(n, in: 65_535...0x7fff_ffff)
        }
        if let n = map["max_frame_size"] { http2.maxFrameSize = try sized(n, in: 16_384...16_777_215) }
        if let n = map["max_header_list_size"] { http2.maxHeaderListSize = try sized(n, in: 1_024...(16 << 20)) }
        if let n = map["extended_connect"] { http2.extendedConnect = try n.bool() }
        return http2
    }

    private static func sized(_ node: ConfigNode, in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        let value = try node.byteSize()
        guard range.contains(value) else {
            throw node.error("\(value) is out of range (\(range.lowerBound)...\(range.upperBound))")
        }
        return value
    }
}

extension ConfigLoader {
    /// A cluster's `protocol:` (http1 or http2).
    static func parseClusterProtocol(_ node: ConfigNode) throws(ConfigError) -> ClusterProtocol {
        let name = try node.string()
        guard let value = ClusterProtocol(rawValue: name) else {
            let known = ClusterProtocol.allCases.map(\.rawValue).joined(separator: ", ")
            throw node.error("unknown protocol '\(name)' (known: \(known))")
        }
        return value
    }
}
