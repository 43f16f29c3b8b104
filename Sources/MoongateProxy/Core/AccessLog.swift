import Logging
import MoongatePolicy
import NIOCore

extension Duration {
    /// Nanoseconds, clamped to Int64.
    var nanosecondsClamped: Int64 {
        let (seconds, atto) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : ns + atto / 1_000_000_000
    }

    var timeAmount: TimeAmount { .nanoseconds(nanosecondsClamped) }
}

/// What refused a request: the access log's `reason`, and (grouped) `moongate_refusals_total`.
enum RefusalReason: String {
    /// A plugin denied, answered, or faulted.
    case plugin
    /// Policy's built-in default: no plugin enabled the CONNECT or upgrade, no route answered.
    case policy
    /// The address floor: the target's name resolves only to special addresses.
    case floor
    /// The request was malformed (400, 414, 431, 505).
    case malformed
    /// A cap: the tunnel limits.
    case limit
    /// Policy named a cluster the config does not have.
    case cluster
    /// No policy has loaded yet (503).
    case unloaded
    /// The client was too slow: a request head or body deadline passed (408).
    case timeout
    /// Moongate is overloaded (503 with Retry-After, before policy).
    case overload

    /// The reason in `moongate_refusals_total` (malformed, limit, timeout, overload, floor, policy).
    var metricReason: String {
        switch self {
        case .malformed: "malformed"
        case .limit: "limit"
        case .timeout: "timeout"
        case .overload: "overload"
        case .floor: "floor"
        case .plugin, .policy, .cluster, .unloaded: "policy"
        }
    }

    static let metricReasons = ["malformed", "limit", "timeout", "overload", "floor", "policy"]

    /// The reason of an answer the proxy made itself after policy's `outcome`: a plugin's or the
    /// default's refusal; after an admitting decision, a 403 is the address floor's (nothing else
    /// answers 403 then) and a 503 before any dial is a cap. Nil when nothing refused it.
    static func of(_ outcome: PolicyOutcome, status: Int, beforeDial: Bool = false) -> RefusalReason? {
        switch outcome.decision {
        case .deny, .fault, .noOpinion:
            return outcome.plugin == nil ? .policy : .plugin
        case .respond:
            return status >= 400 ? .plugin : nil
        case .route, .forward, .tunnel, .tunnelVia:
            if status == 403 { return .floor }
            if status == 503 && beforeDial { return .limit }
            return nil
        }
    }
}

/// One structured access-log line per request or tunnel.
enum AccessLog {
    /// The target as access-log lines and traces print it: a CONNECT's `host:port` in its normal
    /// form, else the request's authority as sent, else `-`.
    static func target(_ target: Authority?, authority: String?) -> String {
        target?.description ?? authority ?? "-"
    }

    /// The texts that must be built (the target's normal form, the decision's summary) are made
    /// only when the line is written: with the access log off, every request paid for them.
    static func write(
        _ logger: Logger, message: @autoclosure () -> Logger.Message, client: ClientInfo, method: String,
        target: @autoclosure () -> String, path: String = "-", decision: @autoclosure () -> String, plugin: String?,
        cluster: String? = nil, reason: RefusalReason? = nil, status: Int, bytesIn: Int, bytesOut: Int, since start: NIODeadline
    ) {
        guard logger.logLevel <= .info else { return }
        let ms = Double((NIODeadline.now() - start).nanoseconds) / 1_000_000
        logger.info(
            message(),
            metadata: [
                "client": "\(client.ip):\(client.port)", "method": "\(method)", "target": "\(target())", "path": "\(path)",
                "decision": "\(decision())", "plugin": "\(plugin ?? "-")", "cluster": "\(cluster ?? "-")",
                "reason": "\(reason?.rawValue ?? "-")", "status": "\(status)", "bytes_in": "\(bytesIn)",
                "bytes_out": "\(bytesOut)", "duration_ms": "\(ms)",
            ])
    }
}

extension PolicyOutcome {
    /// The cluster a route or tunnel_via names.
    var cluster: String? {
        switch decision {
        case .route(let name), .tunnelVia(let name): name
        default: nil
        }
    }
}

extension ProxyRuntime {
    /// A request or tunnel ended: counted, logged (access log) and, when traced, its trace finished
    /// and published. Every codec ends every request here.
    /// - Parameters:
    ///   - reason: what refused it; nil derives it from the outcome for a local answer (`local`).
    ///   - local: the proxy answered itself (not the upstream's status).
    ///   - tunnel: the bytes are a tunnel's (else a forwarded request's bodies).
    ///   - detail: the text of a local answer (a trace names the address floor's refusal with it).
    func requestEnded(
        _ request: PolicyRequest, outcome: PolicyOutcome?, status: Int, reason: RefusalReason? = nil, local: Bool,
        client: ClientInfo, bytesIn: Int, bytesOut: Int, since start: NIODeadline, tunnel: Bool = false, detail: String? = nil
    ) {
        let refusal = reason ?? (local ? outcome.flatMap { RefusalReason.of($0, status: status) } : nil)
        let decision = outcome?.decision
        metrics.request(
            decision: decision?.verb ?? "none", status: status, cluster: outcome?.cluster, refusal: refusal, bytesIn: bytesIn,
            bytesOut: bytesOut, tunnel: tunnel)
        AccessLog.write(
            accessLogger, message: tunnel ? "tunnel" : "request", client: client, method: request.method,
            target: AccessLog.target(request.target, authority: request.authority),
            path: request.path ?? "-", decision: decision?.summary ?? "-", plugin: outcome?.plugin, cluster: outcome?.cluster,
            reason: refusal, status: status, bytesIn: bytesIn, bytesOut: bytesOut, since: start)
        if let trace = request.trace {
            if refusal == .floor, let detail { trace.note("floor", "refused: \(detail) (403)") }
            metrics.tracing.finish(
                trace, request: request, outcome: outcome, status: status, reason: refusal, local: local, client: client,
                bytesIn: bytesIn, bytesOut: bytesOut, since: start)
        }
    }

    /// A request refused before policy saw it (malformed, or no policy loaded): counted and logged.
    func requestRefused(
        status: Int, reason: RefusalReason, detail: String, client: ClientInfo, method: String?, target: String?,
        since start: NIODeadline
    ) {
        metrics.request(decision: "none", status: status, cluster: nil, refusal: reason, bytesIn: 0, bytesOut: 0, tunnel: false)
        AccessLog.write(
            accessLogger, message: "request refused: \(detail)", client: client, method: method ?? "-", target: target ?? "-",
            decision: "-", plugin: nil, reason: reason, status: status, bytesIn: 0, bytesOut: 0, since: start)
        metrics.tracing.refused(
            status: status, reason: reason, detail: detail, client: client, method: method, target: target)
    }
}

extension LocalAnswer {
    /// What refused the request when the planner answers after an admitting decision: a cap (503),
    /// an unknown cluster, or a request with nothing to forward to (400). Nil otherwise (the
    /// outcome says it).
    func refusal(after outcome: PolicyOutcome) -> RefusalReason? {
        if problem != nil { return .cluster }
        guard outcome.decision.admits else { return nil }
        return status == 503 ? .limit : .malformed
    }
}

/// The length of a local answer's body as written (a reason gets a line end; `exact` is sent as it is).
func localBodyLength(_ body: String?, exact: Bool, head: Bool = false) -> Int {
    if head { return 0 }
    guard let body else { return 0 }
    return body.utf8.count + (exact ? 0 : 1)
}
