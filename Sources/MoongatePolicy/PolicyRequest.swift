/// Where a request came from.
public struct ClientInfo: Hashable, Sendable {
    public var ip: String
    public var port: Int
    /// True when the client reached Moongate over TLS.
    public var tls: Bool
    /// The TLS session's details (`req.client.tls` in a script), when known.
    public var session: TLSSessionInfo?
    /// Creates client information.
    public init(ip: String, port: Int = 0, tls: Bool = false, session: TLSSessionInfo? = nil) {
        self.ip = ip
        self.port = port
        self.tls = tls || session != nil
        self.session = session
    }
}

/// What a TLS handshake with a client settled, as a script reads it in `req.client.tls`.
public struct TLSSessionInfo: Hashable, Sendable {
    /// `TLSv1.2` or `TLSv1.3`.
    public var version: String
    /// The protocol ALPN chose (`h2`, `http/1.1`), if any.
    public var alpn: String?
    /// The name the client asked for (SNI), lower-case, if any.
    public var sni: String?
    /// The cipher suite's standard name, when the TLS library tells it.
    public var cipher: String?
    /// The client's certificate, when it presented one that verified.
    public var clientCertificate: ClientCertificateInfo?

    /// Creates session details.
    public init(
        version: String, alpn: String? = nil, sni: String? = nil, cipher: String? = nil,
        clientCertificate: ClientCertificateInfo? = nil
    ) {
        self.version = version
        self.alpn = alpn
        self.sni = sni
        self.cipher = cipher
        self.clientCertificate = clientCertificate
    }
}

/// A verified client certificate as policy sees it.
public struct ClientCertificateInfo: Hashable, Sendable {
    /// The subject, as `CN=alice,O=Example` (attributes in certificate order).
    public var subject: String
    /// The subjectAltName entries: DNS names, e-mail addresses, URIs and IP addresses, as text.
    public var sans: [String]
    /// The SHA-256 fingerprint of the DER certificate, lower-case hex.
    public var sha256: String

    /// Creates certificate details.
    public init(subject: String, sans: [String], sha256: String) {
        self.subject = subject
        self.sans = sans
        self.sha256 = sha256
    }
}

/// Why a request head was refused before policy saw it (always a 4xx/5xx with a reason).
public struct RequestError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The status to answer with.
    public let status: Int
    /// A short reason, safe to show the client.
    public let reason: String
    /// Creates an error.
    public init(status: Int, reason: String) {
        self.status = status
        self.reason = reason
    }
    public var description: String { "\(status) \(reason)" }
}

/// A request head as policy sees it: what the `req` userdata of a script reads, field by field.
///
/// Build one with ``http1(method:uri:version:headers:client:)`` or
/// ``http2(method:scheme:authority:path:protocolName:headers:client:)``; both apply the framing rules
/// that are protocol correctness, not policy (a CONNECT needs `host:port`, and so on).
public struct PolicyRequest: Sendable {
    public var method: String
    public var scheme: String?
    /// The authority as received: the CONNECT target, an absolute URI's authority, `:authority`, or Host.
    public var authority: String?
    public var path: String?
    public var query: String?
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2`.
    public var version: String
    /// `:protocol` of an extended CONNECT (RFC 8441).
    public var protocolName: String?
    /// The `Upgrade` token of an HTTP/1.1 upgrade request, lower-case.
    public var upgrade: String?
    /// The normalised CONNECT target (CONNECT only).
    public var target: Authority?
    /// The normalised host (no port) and port the request is for.
    public var host: String?
    public var port: Int?
    public var client: ClientInfo
    public var headers: [HeaderField]
    /// True for `GET http://host/path` (forward-proxy form).
    public var isAbsoluteForm: Bool
    /// Set when this request is traced (`moongate decide --trace`, the admin `/trace`): policy records its steps there.
    public var trace: PolicyTrace? = nil

    /// The request-target's form: `absolute` (forward proxying), `origin`, `authority` (CONNECT) or
    /// `asterisk`. HTTP/2 requests are `origin`, and `authority` for a classic CONNECT.
    public var form: String {
        if isAbsoluteForm { return "absolute" }
        if target != nil && protocolName == nil && isConnect { return "authority" }
        return path == "*" ? "asterisk" : "origin"
    }

    /// True for a CONNECT (classic or extended).
    public var isConnect: Bool { method == "CONNECT" }

    /// True for a CONNECT that asks for a byte stream to `target`: a classic CONNECT, or an extended
    /// CONNECT with `:protocol bytestream`, which is the same thing (RFC 8441; Envoy treats them alike).
    public var isByteStreamConnect: Bool {
        isConnect && (protocolName == nil || protocolName?.asciiLowercased == "bytestream")
    }

    /// True when policy's `connect` hooks decide: a CONNECT, or an upgrade to another protocol.
    public var isTunnelRequest: Bool { isConnect || upgrade != nil }

    /// Builds an HTTP/1.x request from its request line parts and headers.
    /// - Throws: ``RequestError`` (400) for a CONNECT that is not `host:port`, a bad absolute URI,
    ///   a missing or invalid Host, and so on.
    public static func http1(
        method: String, uri: String, version: String = "HTTP/1.1", headers: [HeaderField], client: ClientInfo
    ) throws(RequestError) -> PolicyRequest {
        var request = PolicyRequest(
            method: method, scheme: nil, authority: nil, path: nil, query: nil, version: version,
            protocolName: nil, upgrade: nil, target: nil, host: nil, port: nil, client: client, headers: headers,
            isAbsoluteForm: false)
        if method == "CONNECT" {
            guard let target = Authority.parseConnectTarget(uri) else {
                throw RequestError(status: 400, reason: "CONNECT needs an authority-form target host:port")
            }
            request.authority = uri
            request.target = target
            request.host = target.host
            request.port = target.port
            return request
        }
        if uri.hasPrefix("/") || (uri == "*" && method == "OPTIONS") {
            request.splitPathAndQuery(uri)
            if let hostHeader = headers.first(named: "host") {
                guard let authority = Authority.parse(hostHeader, defaultPort: 80) else {
                    throw RequestError(status: 400, reason: "invalid Host header")
                }
                request.authority = hostHeader
                request.host = authority.host
                request.port = authority.port
            } else if version == "HTTP/1.1" {
                throw RequestError(status: 400, reason: "HTTP/1.1 requests need a Host header")
            }
        } else {
            guard let schemeEnd = uri.firstRange(of: "://") else {
                throw RequestError(status: 400, reason: "invalid request-target")
            }
            let scheme = uri[..<schemeEnd.lowerBound].lowercased()
            guard scheme == "http" || scheme == "https" else {
                throw RequestError(status: 400, reason: "unsupported scheme '\(scheme)'")
            }
            let rest = uri[schemeEnd.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
            let authorityText = String(rest[..<authorityEnd])
            guard !authorityText.contains("@"),
                let authority = Authority.parse(authorityText, defaultPort: scheme == "https" ? 443 : 80)
            else {
                throw RequestError(status: 400, reason: "invalid authority in the absolute URI")
            }
            request.scheme = scheme
            request.authority = authorityText
            request.host = authority.host
            request.port = authority.port
            request.isAbsoluteForm = true
            let pathPart = rest[authorityEnd...]
            request.splitPathAndQuery(pathPart.isEmpty ? "/" : (pathPart.hasPrefix("?") ? "/" + pathPart : String(pathPart)))
        }
        if let upgrade = headers.first(named: "upgrade"), headers.connectionTokens.contains("upgrade") {
            request.upgrade = upgrade.trimmingSpaces.asciiLowercased
        }
        return request
    }

    /// Builds an HTTP/2 request from its pseudo-headers.
    /// - Throws: ``RequestError`` for a malformed CONNECT (RFC 9113 §8.5, RFC 8441).
    public static func http2(
        method: String, scheme: String?, authority: String?, path: String?, protocolName: String?,
        headers: [HeaderField], client: ClientInfo
    ) throws(RequestError) -> PolicyRequest {
        var request = PolicyRequest(
            method: method, scheme: scheme, authority: authority, path: nil, query: nil, version: "HTTP/2",
            protocolName: protocolName, upgrade: nil, target: nil, host: nil, port: nil, client: client,
            headers: headers, isAbsoluteForm: false)
        if method == "CONNECT" && protocolName == nil {
            guard scheme == nil, path == nil, let authority, let target = Authority.parseConnectTarget(authority) else {
                throw RequestError(status: 400, reason: "HTTP/2 CONNECT needs :authority host:port and no :scheme or :path")
            }
            request.target = target
            request.host = target.host
            request.port = target.port
            return request
        }
        guard let authority, let parsed = Authority.parse(authority, defaultPort: scheme == "http" ? 80 : 443),
            let path, path.hasPrefix("/")
        else {
            throw RequestError(status: 400, reason: "HTTP/2 requests need :authority and an origin-form :path")
        }
        request.host = parsed.host
        request.port = parsed.port
        request.splitPathAndQuery(path)
        if method == "CONNECT" {
            request.target = parsed
            request.upgrade = protocolName?.asciiLowercased
        }
        return request
    }

    /// Parses a request line as an operator writes it: `CONNECT example.org:443`,
    /// `GET http://example.org/ HTTP/1.1`, `GET /path` (with a Host header), `h2 GET https://example.org/`
    /// or `h2 CONNECT example.org:443 websocket` (extended CONNECT with `:protocol`).
    public static func parse(
        line: String, headers: [HeaderField] = [], client: ClientInfo = ClientInfo(ip: "127.0.0.1")
    ) throws(RequestError) -> PolicyRequest {
        var words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        var http2 = false
        if words.first?.lowercased() == "h2" {
            http2 = true
            words.removeFirst()
        }
        guard words.count >= 2 else {
            throw RequestError(status: 400, reason: "expected 'METHOD TARGET [HTTP/1.1]', got '\(line)'")
        }
        let method = words[0]
        let uri = words[1]
        if http2 {
            if method == "CONNECT" {
                if words.count >= 3 {
                    // extended CONNECT: h2 CONNECT host:port/path protocol
                    let slash = uri.firstIndex(of: "/") ?? uri.endIndex
                    let path = slash == uri.endIndex ? "/" : String(uri[slash...])
                    return try .http2(
                        method: method, scheme: "https", authority: String(uri[..<slash]), path: path,
                        protocolName: words[2], headers: headers, client: client)
                }
                return try .http2(
                    method: method, scheme: nil, authority: uri, path: nil, protocolName: nil, headers: headers,
                    client: client)
            }
            guard let schemeEnd = uri.firstRange(of: "://") else {
                throw RequestError(status: 400, reason: "h2 requests are written with an absolute URI")
            }
            let rest = uri[schemeEnd.upperBound...]
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            return try .http2(
                method: method, scheme: String(uri[..<schemeEnd.lowerBound]), authority: String(rest[..<slash]),
                path: slash == rest.endIndex ? "/" : String(rest[slash...]), protocolName: nil, headers: headers,
                client: client)
        }
        let version = words.count >= 3 ? words[2] : "HTTP/1.1"
        return try .http1(method: method, uri: uri, version: version, headers: headers, client: client)
    }

    private mutating func splitPathAndQuery(_ uri: String) {
        if let q = uri.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = String(uri[..<q])
            query = String(uri[uri.index(after: q)...])
        } else {
            path = uri
        }
    }
}

extension Array where Element == HeaderField {
    /// The lower-cased tokens of every `Connection` header.
    public var connectionTokens: Set<String> {
        var tokens = Set<String>()
        for field in self where field.hasName("connection") {
            for token in field.value.split(separator: ",") {
                let t = String(token).trimmingSpaces.asciiLowercased
                if !t.isEmpty { tokens.insert(t) }
            }
        }
        return tokens
    }
}

extension String {
    /// The text without leading and trailing spaces and tabs.
    public var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
