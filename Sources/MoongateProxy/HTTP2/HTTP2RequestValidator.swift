import MoongatePolicy
import NIOHPACK

/// Moongate's own check of an HTTP/2 request's header block before anything of it is translated to
/// HTTP/1.1 (RFC 9113 §8.1.1, §8.2, §8.3; hardening.md §B), independent of swift-nio-http2's
/// validation: every name lower-case token characters, no CR, LF or NUL in any value and no
/// whitespace around one, the pseudo-header fields known, once each and before the others, a token
/// `:method`, a scheme-shaped `:scheme`, an origin-form `:path` of visible ASCII (`*` for OPTIONS),
/// an `:authority` without user info or spaces, `:protocol` only on CONNECT and only where the
/// listener advertised extended CONNECT (RFC 8441 §3), no connection-specific
/// field (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`), `te`
/// only `trailers`, a `host` that names the `:authority`, and a `content-length` of digits (repeats
/// agreeing). Any of these makes the request malformed: a stream error, never forwarded.
enum HTTP2RequestValidator {
    /// A request head that passed.
    struct Head {
        var method: String
        var scheme: String?
        var authority: String?
        var path: String?
        var protocolName: String?
        var fields: [HeaderField]
        /// The declared `content-length`, which the DATA received must match.
        var contentLength: Int?
    }

    /// Why a head is malformed (logged at debug level).
    struct Malformed: Error {
        let reason: String
    }

    static func validate(_ block: HPACKHeaders, extendedConnect: Bool = true) throws(Malformed) -> Head {
        var method: String?, scheme: String?, authority: String?, path: String?, protocolName: String?
        var fields: [HeaderField] = []
        fields.reserveCapacity(block.count)
        var regularSeen = false
        var contentLength: Int?
        var host: String?
        for (name, value, _) in block {
            try checkValue(value, of: name)
            if name.utf8.first == UInt8(ascii: ":") {
                guard !regularSeen else { throw Malformed(reason: "pseudo-header \(name) after a regular field") }
                switch name {
                case ":method": try setOnce(&method, value, name)
                case ":scheme": try setOnce(&scheme, value, name)
                case ":authority": try setOnce(&authority, value, name)
                case ":path": try setOnce(&path, value, name)
                case ":protocol": try setOnce(&protocolName, value, name)
                default: throw Malformed(reason: "unknown or response pseudo-header \(name)")
                }
                continue
            }
            regularSeen = true
            try checkName(name)
            switch name {
            case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
                throw Malformed(reason: "connection-specific field \(name)")
            case "te" where value != "trailers":
                throw Malformed(reason: "te other than trailers")
            case "content-length":
                guard !value.isEmpty, value.utf8.count <= 18, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                    let length = Int(value)
                else { throw Malformed(reason: "content-length is not a number") }
                if let contentLength, contentLength != length { throw Malformed(reason: "content-length values differ") }
                contentLength = length
            case "host":
                guard host == nil else { throw Malformed(reason: "two host fields") }
                host = value
            default:
                break
            }
            fields.append(HeaderField(name, value))
        }
        guard let method else { throw Malformed(reason: "no :method") }
        guard !method.isEmpty, method.utf8.allSatisfy(HTTP1Syntax.isTokenByte) else {
            throw Malformed(reason: ":method is not a token")
        }
        if let scheme, !isScheme(scheme) { throw Malformed(reason: ":scheme is not a scheme") }
        if let authority, !isAuthority(authority) { throw Malformed(reason: ":authority is not host[:port]") }
        if let protocolName {
            guard extendedConnect else { throw Malformed(reason: ":protocol where extended CONNECT is off") }
            guard method == "CONNECT" else { throw Malformed(reason: ":protocol without CONNECT") }
            guard protocolName.utf8.allSatisfy(HTTP1Syntax.isTokenByte), !protocolName.isEmpty else {
                throw Malformed(reason: ":protocol is not a token")
            }
        }
        if method != "CONNECT" || protocolName != nil {
            guard scheme != nil else { throw Malformed(reason: "no :scheme") }
            guard let path, !path.isEmpty else { throw Malformed(reason: "no :path") }
            let asterisk = path == "*" && method == "OPTIONS"
            guard asterisk || (path.utf8.first == UInt8(ascii: "/") && path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }))
            else { throw Malformed(reason: ":path is not origin-form") }
        }
        if let host {
            // RFC 9113 §8.3.1: a host that names another entity than :authority is malformed; with
            // no :authority, host stands in for it.
            if let authority {
                guard host.asciiCaseInsensitiveEquals(authority) else { throw Malformed(reason: "host differs from :authority") }
            } else {
                guard isAuthority(host) else { throw Malformed(reason: "host is not host[:port]") }
                authority = host
            }
        }
        return Head(
            method: method, scheme: scheme, authority: authority, path: path, protocolName: protocolName,
            fields: fields, contentLength: contentLength)
    }

    /// The fields of a trailing HEADERS block (RFC 9110 §6.5): no pseudo-headers, and none of the
    /// fields that frame, route or authenticate a message.
    static func validateTrailers(_ block: HPACKHeaders) throws(Malformed) -> [HeaderField] {
        var fields: [HeaderField] = []
        for (name, value, _) in block {
            try checkValue(value, of: name)
            guard name.utf8.first != UInt8(ascii: ":") else { throw Malformed(reason: "pseudo-header in trailers") }
            try checkName(name)
            // Fields not allowed in trailers are dropped.
            if TrailerFields.isCarried(name) { fields.append(HeaderField(name, value)) }
        }
        return fields
    }

    private static func setOnce(_ slot: inout String?, _ value: String, _ name: String) throws(Malformed) {
        guard slot == nil else { throw Malformed(reason: "duplicate \(name)") }
        slot = value
    }

    private static func checkName(_ name: String) throws(Malformed) {
        guard !name.isEmpty else { throw Malformed(reason: "empty field name") }
        for byte in name.utf8 where !HTTP1Syntax.isTokenByte(byte) || (byte >= 0x41 && byte <= 0x5A) {
            throw Malformed(reason: "field name with an upper-case or non-token character")
        }
    }

    /// RFC 9113 §8.2.1: no NUL, CR or LF anywhere, and no space or tab at either end.
    private static func checkValue(_ value: String, of name: String) throws(Malformed) {
        let bytes = value.utf8
        for byte in bytes where byte == 0 || byte == 0x0A || byte == 0x0D {
            throw Malformed(reason: "NUL, CR or LF in \(name)")
        }
        if let first = bytes.first, let last = bytes.last,
            first == 0x20 || first == 0x09 || last == 0x20 || last == 0x09
        {
            throw Malformed(reason: "whitespace around the value of \(name)")
        }
    }

    private static func isScheme(_ scheme: String) -> Bool {
        guard let first = scheme.utf8.first, isAlpha(first) else { return false }
        return scheme.utf8.allSatisfy { isAlpha($0) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E }
    }

    /// host[:port] with a reg-name, IPv4 or bracketed IPv6 host: no user info, no spaces or controls.
    private static func isAuthority(_ authority: String) -> Bool {
        guard !authority.isEmpty else { return false }
        return authority.utf8.allSatisfy { byte in
            switch byte {
            case 0x41...0x5A, 0x61...0x7A, 0x30...0x39: return true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"),
                UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "%"):
                return true
            default: return false
            }
        }
    }

    private static func isAlpha(_ byte: UInt8) -> Bool { (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) }
}
