import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1

/// What `moongate decide` reports: policy's verdict, then what the proxy would do with it.
public struct DryRunReport: Sendable {
    /// The request as policy saw it (after the proxy's parsing and normalisation).
    public let request: PolicyRequest
    public let verdict: PolicyVerdict
    /// The address floor's effect (nil when it does not apply: a local answer).
    public let floor: String?
    /// What the client would get: `403 Forbidden: …`, `forwarded to …`, `200, then a tunnel to …`.
    public let result: String
    /// The request head that would go upstream, line by line, exactly as the proxy writes it.
    public let upstreamRequest: [String]
}

/// Runs one request through the proxy's own steps without a socket: the HTTP/1.1 parser and its
/// limits, the framing rules, policy, the request planner, the address floor (with real DNS for
/// names, or `resolve` overrides like curl's `--resolve`), and the upstream head writer. So
/// `moongate decide` says what the proxy does, not only what policy decides.
public enum DryRun {
    /// - Parameters:
    ///   - line: `GET http://example.org/ HTTP/1.1`, `CONNECT example.org:443`, `h2 GET https://…`.
    ///   - resolve: addresses to use for names instead of DNS (`name` → addresses).
    ///   - trace: record policy's steps in ``PolicyRequest/trace`` (with times).
    /// - Throws: ``RequestError`` for a request the proxy refuses before policy (400, 414, 431, 505).
    public static func run(
        config: MoongateConfiguration, instance: PolicyInstance, line: String, headers: [HeaderField], client: ClientInfo,
        resolve: [String: [String]], trace: Bool
    ) throws(RequestError) -> DryRunReport {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        var request: PolicyRequest
        var head: ClientRequestHead?
        if words.first?.lowercased() == "h2" {
            request = try PolicyRequest.parse(line: line, headers: headers, client: client)
        } else {
            let parsed = try parseHTTP1(words, headers: headers, limits: config.limits)
            if let problem = HTTP1ProxyHandler.framingProblem(parsed) { throw problem }
            request = try PolicyRequest.http1(
                method: parsed.method, uri: parsed.uri, version: parsed.version, headers: parsed.fields, client: client)
            head = parsed
        }
        if trace { request.trace = PolicyTrace() }
        let verdict = instance.evaluate(request)
        let keepAlive = (head?.isKeepAlive ?? true) && !request.isConnect && request.upgrade == nil
        let clusters = Dictionary(config.clusters.map { ($0.name, ClusterTarget($0)) }, uniquingKeysWith: { first, _ in first })
        let action = RequestPlanner.plan(request, verdict, keepAlive: keepAlive, tunnelRefusal: { nil }, cluster: { clusters[$0] })
        let allowed = Set(config.policy.allowedAddresses)
        switch action {
        case .answer(let answer):
            let body = answer.body.map { ": \($0)" } ?? ""
            return DryRunReport(
                request: request, verdict: verdict, floor: nil, result: "\(answer.status) \(reasonPhrase(answer.status))\(body)",
                upstreamRequest: [])
        case .terminateTunnel(let target):
            let (floor, address) = addressFloor(target, allowed: allowed, resolve: resolve, trace: request.trace)
            guard let address else {
                return DryRunReport(request: request, verdict: verdict, floor: floor.text, result: floor.refusal, upstreamRequest: [])
            }
            return DryRunReport(
                request: request, verdict: verdict, floor: floor.text,
                result: "200 Connection established once \(address) accepts, then a byte relay", upstreamRequest: [])
        case .exchange(let kind, let destination, let upstreamHeaders, _):
            var floorText: String? = nil
            var via: String
            switch destination {
            case .cluster(let target):
                floorText = "not applied: cluster '\(target.config.name)' endpoints are the operator's"
                via = "cluster \(target.config.name) (\(target.config.endpoints.map(\.description).joined(separator: ", ")))"
            case .authority(let authority):
                let (floor, address) = addressFloor(authority, allowed: allowed, resolve: resolve, trace: request.trace)
                floorText = floor.text
                guard let address else {
                    return DryRunReport(request: request, verdict: verdict, floor: floor.text, result: floor.refusal, upstreamRequest: [])
                }
                via = "\(authority) at \(address)"
            }
            let allocator = ByteBufferAllocator()
            let bytes: ByteBuffer
            if let head {
                bytes = HTTP1ProxyHandler.upstreamHead(for: request, kind: kind, head: head, headers: upstreamHeaders, allocator: allocator).0
            } else {
                switch kind {
                case .forward:
                    bytes = HTTP2StreamHandler.upstreamHead(request, headers: upstreamHeaders, endStream: true, allocator: allocator).0
                case .upgrade:
                    bytes = HTTP2StreamHandler.upgradeHead(
                        request, upgrade: request.upgrade ?? "websocket", headers: upstreamHeaders, allocator: allocator)
                case .connectVia:
                    bytes = HTTP2StreamHandler.connectViaHead(request, headers: upstreamHeaders, allocator: allocator)
                }
            }
            let text = String(buffer: bytes)
            let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
            let what = kind == .connectVia ? "CONNECT sent on to" : (kind == .upgrade ? "upgrade sent to" : "forwarded to")
            return DryRunReport(request: request, verdict: verdict, floor: floorText, result: "\(what) \(via)", upstreamRequest: lines)
        }
    }

    /// The head as the proxy's parser reads it, from the request line and header lines.
    private static func parseHTTP1(_ words: [String], headers: [HeaderField], limits: Limits) throws(RequestError) -> ClientRequestHead {
        guard words.count >= 2 else {
            throw RequestError(status: 400, reason: "expected 'METHOD TARGET [HTTP/1.1]', got '\(words.joined(separator: " "))'")
        }
        var text = "\(words[0]) \(words[1]) \(words.count >= 3 ? words[2] : "HTTP/1.1")\r\n"
        for field in headers { text += "\(field.name): \(field.value)\r\n" }
        text += "\r\n"
        var buffer = ByteBuffer(string: text)
        let parser = ClientRequestParser(limits: limits)
        var head: ClientRequestHead?
        do {
            _ = try parser.feed(&buffer) { part in
                if case .head(let h) = part, head == nil { head = h }
            }
        } catch {
            throw RequestError(status: error.status, reason: "malformed request: \(error.reason)")
        }
        guard let head else { throw RequestError(status: 400, reason: "malformed request: incomplete head") }
        return head
    }

    private struct FloorResult {
        let text: String
        let refusal: String
    }

    /// The address floor for a name (literals are policy's call), as the proxy applies it.
    private static func addressFloor(
        _ authority: Authority, allowed: Set<String>, resolve: [String: [String]], trace: PolicyTrace?
    ) -> (FloorResult, String?) {
        let started = ContinuousClock.now
        let host = authority.bareHost
        func done(_ text: String, _ refusal: String, _ address: String?) -> (FloorResult, String?) {
            let elapsed = ContinuousClock.now - started
            let micros = Double(elapsed.components.attoseconds / 100_000_000_000) / 10 + Double(elapsed.components.seconds) * 1_000_000
            trace?.note("floor", "\(text)  (\(micros) µs)")
            return (FloorResult(text: text, refusal: refusal), address)
        }
        if authority.isIPLiteral {
            return done("not applied: \(host) is an IP literal (policy's call)", "", "\(host):\(authority.port)")
        }
        let addresses: [SocketAddress]
        let source: String
        do {
            if let given = resolve[host.lowercased()] {
                addresses = try given.map { try SocketAddress(ipAddress: $0, port: authority.port) }
                source = "--resolve"
            } else {
                addresses = try NameLookup.addresses(of: host)
                source = "DNS"
            }
        } catch {
            return done("\(host) does not resolve", "503 Service Unavailable: upstream unreachable (cannot resolve \(host))", nil)
        }
        let listed = addresses.compactMap(\.ipAddress).joined(separator: ", ")
        do {
            let passed = try TargetResolver.checked(addresses, host: host, port: authority.port, allowed: allowed, floor: true)
            let ip = passed[0].ipAddress ?? "?"
            let order = passed.count > 1 ? "dials \(ip) first (then the other \(passed.count - 1) in turn)" : "dials \(ip)"
            return done("passed: \(host) -> \(listed) (\(source)); \(order)", "", ip.contains(":") ? "[\(ip)]:\(authority.port)" : "\(ip):\(authority.port)")
        } catch {
            let reason = UpstreamDialer.failure(error).1
            return done("refused: \(host) -> \(listed) (\(source)): \(reason)", "403 Forbidden: \(reason) (address floor)", nil)
        }
    }

    private static func reasonPhrase(_ status: Int) -> String {
        HTTPResponseStatus(statusCode: status).reasonPhrase
    }
}
