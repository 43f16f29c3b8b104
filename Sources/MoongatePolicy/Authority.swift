#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A normalised `host:port`: lower-case host without a trailing dot, IPv4 in dotted-quad form
/// (so `127.1`, `2130706433` and `0x7f000001` all read `127.0.0.1`), IPv6 in brackets.
public struct Authority: Hashable, Sendable, CustomStringConvertible {
    /// The host as policy sees it: `example.org`, `127.0.0.1`, `[::1]`.
    public let host: String
    public let port: Int

    /// The host as a resolver wants it (IPv6 without brackets).
    public var bareHost: String {
        host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
    }

    /// True when the host is an IP literal.
    public var isIPLiteral: Bool { host.hasPrefix("[") || Authority.canonicalIPv4(host) == host }

    public var description: String { "\(host):\(port)" }

    /// Creates an authority from already-normalised parts.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` as a CONNECT request-target (authority-form): the port is required.
    /// - Returns: `nil` when the text is not a valid authority-form target.
    public static func parseConnectTarget(_ text: String) -> Authority? {
        guard let (host, port) = split(text), let port else { return nil }
        return normalise(host: host, port: port)
    }

    /// Parses `host[:port]` (a Host header or an absolute URI's authority), using `defaultPort`
    /// when no port is given.
    public static func parse(_ text: String, defaultPort: Int) -> Authority? {
        guard let (host, port) = split(text) else { return nil }
        return normalise(host: host, port: port ?? defaultPort)
    }

    private static func split(_ text: String) -> (Substring, Int?)? {
        guard !text.isEmpty, text.utf8.count <= 1024 else { return nil }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = text[...close]
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, nil) }
            guard rest.hasPrefix(":"), let port = parsePort(rest.dropFirst()) else { return nil }
            return (host, port)
        }
        guard let colon = text.utf8.firstIndex(of: UInt8(ascii: ":")) else { return (text[...], nil) }
        guard let port = parsePort(text[text.index(after: colon)...]) else { return nil }
        return (text[..<colon], port)
    }

    private static func parsePort(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let port = Int(text), (1...65535).contains(port)
        else { return nil }
        return port
    }

    private static func normalise(host: Substring, port: Int) -> Authority? {
        if isCanonicalName(host.utf8) { return Authority(host: String(host), port: port) }
        if host.hasPrefix("[") {
            let inner = String(host.dropFirst().dropLast())
            guard let canonical = canonicalIPv6(inner) else { return nil }
            return Authority(host: "[\(canonical)]", port: port)
        }
        var name = String(host).asciiLowercased
        if name.hasSuffix(".") { name.removeLast() }
        guard !name.isEmpty, name.utf8.count <= 253 else { return nil }
        if let v4 = canonicalIPv4(name) { return Authority(host: v4, port: port) }
        let valid = name.utf8.allSatisfy { c in
            (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 45 || c == 46 || c == 95
        }
        guard valid, !name.hasPrefix("."), !name.contains("..") else { return nil }
        return Authority(host: name, port: port)
    }

    /// True for a name that is already in normal form (the common case, checked in one pass):
    /// lower-case letters, digits, `-` and `_` in labels separated by single dots, starting with a
    /// letter (so it cannot be an IPv4 spelling), no leading or trailing dot.
    private static func isCanonicalName(_ bytes: Substring.UTF8View) -> Bool {
        guard let first = bytes.first, first >= 97 && first <= 122, bytes.count <= 253 else { return false }
        var previousDot = false
        for c in bytes {
            if c == 46 {
                if previousDot { return false }
                previousDot = true
            } else if (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 45 || c == 95 {
                previousDot = false
            } else {
                return false
            }
        }
        return !previousDot
    }

    /// Dotted-quad form of anything `inet_aton` reads as IPv4 (`127.1`, `0177.0.0.1`, `2130706433`).
    public static func canonicalIPv4(_ text: String) -> String? {
        guard let first = text.utf8.first, first >= 48 && first <= 57 else { return nil }
        if isDottedQuad(text.utf8) { return text }
        var addr = in_addr()
        guard inet_aton(text, &addr) != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// True for text already in dotted-quad form: four decimal octets, no leading zeros, none over 255.
    private static func isDottedQuad(_ bytes: String.UTF8View) -> Bool {
        var octets = 0
        var value = 0
        var digits = 0
        var leadingZero = false
        for c in bytes {
            if c == 46 {
                guard digits > 0, octets < 3 else { return false }
                octets += 1
                value = 0
                digits = 0
                leadingZero = false
            } else if c >= 48 && c <= 57 {
                guard !leadingZero else { return false }
                if digits == 0 && c == 48 { leadingZero = true }
                value = value * 10 + Int(c - 48)
                digits += 1
                guard digits <= 3, value <= 255 else { return false }
            } else {
                return false
            }
        }
        return octets == 3 && digits > 0
    }

    /// The canonical text form of an IPv6 literal (no brackets).
    public static func canonicalIPv6(_ text: String) -> String? {
        var addr = in6_addr()
        guard inet_pton(AF_INET6, text, &addr) == 1 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
