#if canImport(Glibc)
import Glibc
#endif
import MoongatePolicy

/// Which requests a `/trace` listener wants, from its query parameters: `client` (an address or a
/// CIDR block), `host`, `path` (a prefix), `method`, `decision` (a verb such as `forward` or `deny`,
/// a summary such as `deny 403`, or a refusal reason such as `floor` or `malformed`); and how many
/// lines a second (`rate`, 1–100, default 10) for how long (`seconds`, 1–300, default 30).
struct TraceFilter: Sendable, CustomStringConvertible {
    var client: AddressBlock?
    var host: String?
    var pathPrefix: String?
    var method: String?
    var decision: String?
    var rate = 10
    var seconds = 30

    /// Why a query was refused (the admin answers 400 with it).
    struct Invalid: Error {
        let message: String
    }

    /// Parses `a=1&b=2` (percent-decoded, `+` is a space).
    static func parse(query: String) throws(Invalid) -> TraceFilter {
        var filter = TraceFilter()
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            let value = parts.count > 1 ? percentDecoded(parts[1]) : ""
            switch name {
            case "client":
                guard let block = AddressBlock(value) else { throw Invalid(message: "client: '\(value)' is not an address or CIDR block") }
                filter.client = block
            case "host": filter.host = value.asciiLowercased
            case "path": filter.pathPrefix = value
            case "method": filter.method = value.uppercased()
            case "decision": filter.decision = value
            case "rate":
                guard let n = Int(value), (1...100).contains(n) else { throw Invalid(message: "rate: lines per second, 1 to 100 (default 10)") }
                filter.rate = n
            case "seconds":
                guard let n = Int(value), (1...300).contains(n) else { throw Invalid(message: "seconds: 1 to 300 (default 30)") }
                filter.seconds = n
            default:
                throw Invalid(message: "unknown parameter '\(name)' (known: client, host, path, method, decision, rate, seconds)")
            }
        }
        return filter
    }

    /// True when a request head passes the filters that do not need the outcome.
    func matchesHead(client ip: String, method: String, host: String?, path: String?) -> Bool {
        if let block = client, !block.contains(ip) { return false }
        if let want = self.host, host != want { return false }
        if let prefix = pathPrefix, !(path ?? "").hasPrefix(prefix) { return false }
        if let want = self.method, method != want { return false }
        return true
    }

    /// True when the outcome passes the `decision` filter.
    func matchesDecision(_ decision: Decision?, reason: String?) -> Bool {
        guard let want = self.decision else { return true }
        if let reason, reason == want { return true }
        guard let decision else { return want == "none" }
        return decision.matches(want)
    }

    var description: String {
        var fields: [String] = []
        if let client { fields.append("\"client\":\(JSON.quote(client.text))") }
        if let host { fields.append("\"host\":\(JSON.quote(host))") }
        if let pathPrefix { fields.append("\"path\":\(JSON.quote(pathPrefix))") }
        if let method { fields.append("\"method\":\(JSON.quote(method))") }
        if let decision { fields.append("\"decision\":\(JSON.quote(decision))") }
        return "{\(fields.joined(separator: ","))}"
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i < utf8.endIndex {
            let b = utf8[i]
            if b == UInt8(ascii: "%"), let h = utf8.index(i, offsetBy: 2, limitedBy: utf8.endIndex), h < utf8.endIndex,
                let hi = hex(utf8[utf8.index(after: i)]), let lo = hex(utf8[h])
            {
                bytes.append(hi << 4 | lo)
                i = utf8.index(after: h)
                continue
            }
            bytes.append(b == UInt8(ascii: "+") ? UInt8(ascii: " ") : b)
            i = utf8.index(after: i)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// An IPv4 or IPv6 address, or a CIDR block of them (`127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`).
struct AddressBlock: Sendable {
    let text: String
    private let bytes: [UInt8]
    private let prefix: Int

    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = Self.parse(String(parts[0])) else { return nil }
        let prefix: Int
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...bytes.count * 8).contains(n) else { return nil }
            prefix = n
        } else {
            prefix = bytes.count * 8
        }
        self.text = text
        self.bytes = bytes
        self.prefix = prefix
    }

    /// True when `ip` (text form) is in the block.
    func contains(_ ip: String) -> Bool {
        guard var other = Self.parse(ip) else { return false }
        if other.count != bytes.count {
            // An IPv4-mapped IPv6 client (::ffff:a.b.c.d) against an IPv4 block.
            guard bytes.count == 4, other.count == 16, other[0..<10].allSatisfy({ $0 == 0 }), other[10] == 0xff, other[11] == 0xff
            else { return false }
            other = Array(other[12...])
        }
        var bits = prefix
        for i in 0..<bytes.count where bits > 0 {
            let take = min(bits, 8)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - take))
            if bytes[i] & mask != other[i] & mask { return false }
            bits -= take
        }
        return true
    }

    private static func parse(_ text: String) -> [UInt8]? {
        #if canImport(Glibc)
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, text, &buffer) == 1 { return Array(buffer[0..<4]) }
        if inet_pton(AF_INET6, text, &buffer) == 1 { return buffer }
        #endif
        return nil
    }
}
