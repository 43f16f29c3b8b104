import MoongateConfig

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
/// ```
public struct DecisionCase: Sendable {
    public var name: String
    /// `CONNECT host:port`, `GET http://host/path HTTP/1.1`, `GET /path` (with a host header),
    /// `h2 GET https://host/path`, `h2 CONNECT host:port/path websocket`.
    public var request: String
    public var headers: [HeaderField]
    /// `ip` or `ip:port` of the client.
    public var client: String?
    public var tls: Bool
    /// The hook to call (plugin tests only): `route`, `connect`, `sanitize_request`.
    public var hook: String?
    /// The plugin config for this case (plugin tests only); the live config when absent.
    public var config: ConfigValue?
    /// The expected decision (`route origin`, `tunnel`, `deny 403`, `none`, …).
    public var expect: String?
    /// Headers that must be present with these values: after sanitization, or in a deny or respond.
    public var expectHeaders: [HeaderField]
    /// Headers that must be absent after sanitization.
    public var expectAbsent: [String]
    /// The plugin expected to decide (fixtures).
    public var expectPlugin: String?

    /// Reads a case from a decoded value; `position` names it in errors ("test 3").
    public init(_ value: ConfigValue, position: String) throws(CaseError) {
        guard case .table = value else { throw CaseError("\(position): a case must be a table") }
        guard let request = value["request"]?.stringValue else {
            throw CaseError("\(position): a case needs request = \"METHOD TARGET\"")
        }
        self.request = request
        self.name = value["name"]?.stringValue ?? "\(position) (\(request))"
        self.headers = try DecisionCase.fields(value["headers"], position: position)
        self.client = value["client"]?.stringValue
        if case .bool(let b)? = value["tls"] { self.tls = b } else { self.tls = false }
        self.hook = value["hook"]?.stringValue
        self.config = value["config"]
        self.expect = value["expect"]?.stringValue
        self.expectHeaders = try DecisionCase.fields(value["expect_headers"], position: position)
        if case .array(let items)? = value["expect_absent"] {
            self.expectAbsent = items.compactMap(\.stringValue)
        } else {
            self.expectAbsent = []
        }
        self.expectPlugin = value["expect_plugin"]?.stringValue
        if expect == nil && expectHeaders.isEmpty && expectAbsent.isEmpty {
            throw CaseError("\(name): a case needs expect, expect_headers or expect_absent")
        }
        if let hook, Hook(rawValue: hook) == nil || hook == "init" {
            throw CaseError("\(name): unknown hook '\(hook)'")
        }
    }

    private static func fields(_ value: ConfigValue?, position: String) throws(CaseError) -> [HeaderField] {
        switch value {
        case nil, .null?: return []
        case .table(let pairs)?:
            var out: [HeaderField] = []
            for (k, v) in pairs {
                guard let s = v.stringValue else { throw CaseError("\(position): header '\(k)' must be a string") }
                out.append(HeaderField(k, s))
            }
            return out
        case .array(let items)?:
            return try items.map { item throws(CaseError) in
                guard case .array(let pair) = item, pair.count == 2, let n = pair[0].stringValue, let v = pair[1].stringValue else {
                    throw CaseError("\(position): headers as a list must hold {name, value} pairs")
                }
                return HeaderField(n, v)
            }
        default:
            throw CaseError("\(position): headers must be a table of name = value")
        }
    }

    /// Builds the request the case describes.
    public func makeRequest() throws(CaseError) -> PolicyRequest {
        var clientInfo = ClientInfo(ip: "127.0.0.1", port: 40000, tls: tls)
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
            throw CaseError("\(name): the request is invalid: \(error.reason)")
        }
    }

    /// Parses a JSONL text: one case per non-empty line (lines starting with `#` are comments).
    public static func parseJSONL(_ text: String, file: String) throws(CaseError) -> [DecisionCase] {
        var cases: [DecisionCase] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = String(line).trimmingSpaces
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let value: ConfigValue
            do {
                value = try JSONDecoder().decode(ConfigValue.self, from: Data(trimmed.utf8))
            } catch {
                throw CaseError("\(file):\(index + 1): invalid JSON")
            }
            cases.append(try DecisionCase(value, position: "\(file):\(index + 1)"))
        }
        return cases
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

/// A malformed test case or fixture line.
public struct CaseError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The result of one case.
public struct CaseResult: Sendable, CustomStringConvertible {
    public let plugin: String?
    /// The fixture file of a replayed case (nil for a plugin's own test).
    public let file: String?
    public let name: String
    /// Nil when the case passed.
    public let failure: String?
    public var passed: Bool { failure == nil }
    public var description: String {
        let who = plugin.map { "\($0): " } ?? ""
        return passed ? "ok   \(who)\(name)" : "FAIL \(who)\(name): \(failure!)"
    }
}
