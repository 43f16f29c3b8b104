import MoongateConfig

/// One request with the decision expected for it: an entry of a plugin's `tests` table, or one line
/// of a JSONL fixture file. The same format serves both, and `moongate decide` prints the same
/// `expect` syntax.
///
/// ```lua
/// { name = "public 443 is tunnelled", request = "CONNECT example.org:443", expect = "tunnel" }
/// { name = "bad password", request = "CONNECT example.org:443",
///   headers = { ["proxy-authorization"] = "Basic eDp5" }, expect = "deny 407" }
/// { name = "adds XFF", hook = "sanitize_request", request = "GET http://a.test/ HTTP/1.1",
///   client = "203.0.113.9", expect_headers = { ["x-forwarded-for"] = "203.0.113.9" } }
/// { name = "a misspelt cluster is refused", config = { via = "parnet" }, clusters = { "parent" },
///   expect_error = "unknown cluster 'parnet'" }
/// ```
///
/// Unknown keys are errors (a misspelt `clinet` would otherwise be a silently weaker test).
public struct DecisionCase: Sendable {
    /// Where a case is written: a plugin's own `tests`, or a fixture replayed against the composition.
    public enum Origin: Sendable {
        case pluginTest, fixture
    }

    public var name: String
    /// `CONNECT host:port`, `GET http://host/path HTTP/1.1`, `GET /path` (with a host header),
    /// `h2 GET https://host/path`, `h2 CONNECT host:port/path websocket`. Empty for an `expect_error` case.
    public var request: String
    public var headers: [HeaderField]
    /// `ip` or `ip:port` of the client.
    public var client: String?
    public var tls: Bool
    /// The TLS session details of a `tls = { sni = ..., alpn = ..., ... }` case.
    public var session: TLSSessionInfo?
    /// The hook to call (plugin tests only): `route`, `connect`, `sanitize_request`.
    public var hook: String?
    /// The plugin config for this case (plugin tests only); the live config when absent.
    public var config: ConfigValue?
    /// The cluster names this case runs with (plugin tests only); the configured ones when absent.
    public var clusters: [String]?
    /// The expected decision (`route origin`, `tunnel`, `deny 403`, `none`, …).
    public var expect: String?
    /// Headers that must be present with these values: after sanitization, or in a deny or respond.
    public var expectHeaders: [HeaderField]
    /// Headers that must be absent after sanitization.
    public var expectAbsent: [String]
    /// The plugin expected to decide (fixtures).
    public var expectPlugin: String?
    /// Text the plugin's load error must contain: the case's config (and clusters) must make the
    /// plugin refuse to load (plugin tests only).
    public var expectError: String?
    /// The line the case starts on in its file (the Lua table or the JSONL line), when known.
    public var line: Int?

    /// The keys every case may have.
    static let commonKeys = [
        "name", "request", "headers", "client", "tls", "expect", "expect_headers", "expect_absent", "expect_plugin",
    ]
    /// The keys only a plugin's own tests may have.
    static let pluginTestKeys = ["hook", "config", "clusters", "expect_error"]

    /// Reads a case from a decoded value; `position` names it when it has no name ("test 3").
    /// - Throws: ``CaseError`` for an unknown key, a value of the wrong kind or a missing part (the
    ///   message does not repeat the position; the caller adds file and line).
    public init(_ value: ConfigValue, position: String, origin: Origin = .pluginTest, line: Int? = nil) throws(CaseError) {
        guard case .table(let pairs) = value else { throw CaseError("a case must be a table") }
        try Self.checkKeys(pairs.map(\.key), origin: origin)
        let fields = CaseFields(value)
        self.line = line
        self.expectError = try fields.string("expect_error")
        self.config = value["config"]
        self.clusters = try fields.strings("clusters")
        self.hook = try fields.string("hook")
        self.client = try fields.string("client")
        if let table = value["tls"], case .table = table {
            self.session = try TLSSessionInfo(caseValue: table)
            self.tls = true
        } else {
            self.tls = try fields.bool("tls") ?? false
        }
        self.expect = try fields.string("expect")
        self.expectPlugin = try fields.string("expect_plugin")
        self.expectAbsent = try fields.strings("expect_absent") ?? []
        self.headers = try fields.headers("headers")
        self.expectHeaders = try fields.headers("expect_headers")
        let request = try fields.string("request")
        self.request = request ?? ""
        self.name = try fields.string("name") ?? (request.map { "\(position) (\($0))" } ?? position)
        if expectError != nil {
            let extra = pairs.map(\.key).filter { !["name", "config", "clusters", "expect_error"].contains($0) }
            if let key = extra.first { throw CaseError("'\(key)' cannot be combined with expect_error (a case that expects a load error sends no request)") }
            return
        }
        if request == nil { throw CaseError("a case needs request = \"METHOD TARGET\"") }
        if expect == nil && expectHeaders.isEmpty && expectAbsent.isEmpty {
            throw CaseError("a case needs expect, expect_headers, expect_absent or expect_error")
        }
        if let hook, Hook(rawValue: hook) == nil || hook == "init" {
            throw CaseError("unknown hook '\(hook)' (hooks: route, connect, sanitize_request, sanitize_response, log)")
        }
    }

    private static func checkKeys(_ keys: [String], origin: Origin) throws(CaseError) {
        let known = commonKeys + (origin == .pluginTest ? pluginTestKeys : [])
        for key in keys where !known.contains(key) {
            if origin == .fixture && pluginTestKeys.contains(key) {
                throw CaseError("'\(key)' is only for a plugin's own tests, not fixtures")
            }
            let hint = Self.nearest(to: key, in: known).map { "did you mean '\($0)'? " } ?? ""
            throw CaseError("unknown key '\(key)' (\(hint)known keys: \(known.joined(separator: ", ")))")
        }
    }

    /// The known key closest to a misspelt one (at most two edits away).
    private static func nearest(to key: String, in known: [String]) -> String? {
        known.map { ($0, editDistance(key, $0)) }.filter { $0.1 <= 2 }.min { $0.1 < $1.1 }?.0
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var row = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = row
        }
        return previous[b.count]
    }

    /// The cluster the expectation names (`route api`, `tunnel_via parent`), if any.
    public var expectedCluster: String? {
        guard let expect else { return nil }
        let words = expect.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count == 2, words[0] == "route" || words[0] == "tunnel_via" else { return nil }
        return String(words[1])
    }

    /// Why the expectation cannot hold with these clusters (a name not among them), or nil. An empty
    /// list is unknown and checks nothing.
    public func clusterProblem(known: [String]) -> String? {
        guard !known.isEmpty, let cluster = expectedCluster, !known.contains(cluster) else { return nil }
        return "expects cluster '\(cluster)', which is not configured (clusters: \(known.joined(separator: ", ")))"
    }

    /// Builds the request the case describes.
    public func makeRequest() throws(CaseError) -> PolicyRequest {
        var clientInfo = ClientInfo(ip: "127.0.0.1", port: 40000, tls: tls, session: session)
        if let client {
            let bareIPv6 = !client.hasPrefix("[") && client.filter({ $0 == ":" }).count > 1
            if !bareIPv6, let endpoint = ConfigLoader.parseEndpoint(client) {
                clientInfo.ip = endpoint.host
                clientInfo.port = endpoint.port
            } else {
                clientInfo.ip = client
            }
        }
        do {
            return try PolicyRequest.parse(line: request, headers: headers, client: clientInfo)
        } catch {
            throw CaseError("the request is invalid: \(error.reason)")
        }
    }

    /// Compares what happened with what the case expects; returns the mismatch, or nil.
    public func mismatch(outcome: PolicyOutcome, headers: [HeaderField]?) -> String? {
        if let expect, !outcome.decision.matches(expect) {
            var text = "expected '\(expect)', got '\(outcome.decision.summary)'"
            if case .fault(let fault) = outcome.decision { text += " (\(fault.message))" }
            return text
        }
        if let expectPlugin, outcome.plugin != expectPlugin {
            return "expected plugin '\(expectPlugin)' to decide, got '\(outcome.plugin ?? "default")'"
        }
        if !expectHeaders.isEmpty || !expectAbsent.isEmpty {
            var actual = headers ?? []
            switch outcome.decision {
            case .deny(_, _, let local), .respond(_, _, let local): actual = local
            default: break
            }
            for field in expectHeaders where actual.first(named: field.name) != field.value {
                return "expected header '\(field.name): \(field.value)', got '\(actual.first(named: field.name) ?? "(absent)")'"
            }
            for name in expectAbsent where actual.first(named: name) != nil {
                return "expected header '\(name)' to be absent"
            }
        }
        return nil
    }
}
