/// Which trailer fields (RFC 9110 §6.5) Moongate carries from one hop to the next, whatever the
/// two protocols: none that frame the message, describe its content, route it, authenticate it or
/// are connection-specific; the others (`grpc-status`, checksums, timings) go on.
enum TrailerFields {
    static func isCarried(_ name: String) -> Bool {
        switch name.lowercased() {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "content-length",
            "host", "trailer", "authorization", "proxy-authorization", "content-type", "content-encoding", "expect":
            return false
        default:
            return !name.hasPrefix(":")
        }
    }
}
