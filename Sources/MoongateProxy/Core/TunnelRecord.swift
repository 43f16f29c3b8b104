import Logging
import MoongatePolicy
import NIOCore

/// What an open tunnel keeps for its access-log line, metrics and log hooks when it closes: the
/// few fields they print. The request and the outcome they come from, held whole (inline, even as
/// nil optionals) by the close callback, took about a kilobyte per idle tunnel (P5); the whole
/// request is kept, boxed, only when a trace follows it or a log hook will read it.
struct TunnelRecord {
    let method: String
    private let targetAuthority: Authority?
    private let authorityText: String?
    let path: String
    let decision: Decision
    let plugin: String?
    let cluster: String?
    private let kept: KeptRequest?

    /// The request of a traced tunnel, or of one whose generation has log hooks.
    private final class KeptRequest {
        let request: PolicyRequest
        let outcome: PolicyOutcome
        let logHooks: PolicyInstance?
        init(_ request: PolicyRequest, _ outcome: PolicyOutcome, _ logHooks: PolicyInstance?) {
            self.request = request
            self.outcome = outcome
            self.logHooks = logHooks
        }
    }

    init(request: PolicyRequest, outcome: PolicyOutcome, instance: PolicyInstance) {
        method = request.method
        targetAuthority = request.target
        authorityText = request.authority
        path = request.path ?? "-"
        decision = outcome.decision
        plugin = outcome.plugin
        cluster = outcome.cluster
        let logHooks = instance.hasLogHooks ? instance : nil
        kept = request.trace != nil || logHooks != nil ? KeptRequest(request, outcome, logHooks) : nil
    }

    /// The target as the access log prints it (made only when a line is written).
    var target: String { AccessLog.target(targetAuthority, authority: authorityText) }

    /// The traced request and its outcome (the trace's end reads them).
    var traced: (PolicyRequest, PolicyOutcome)? {
        guard let kept, kept.request.trace != nil else { return nil }
        return (kept.request, kept.outcome)
    }

    /// Runs the log hooks of the generation that admitted the tunnel, if it has any.
    func runLogHooks(status: Int) {
        guard let kept, let instance = kept.logHooks else { return }
        instance.log(request: kept.request, status: status)
    }
}

extension ProxyRuntime {
    /// A tunnel closed: counted and logged as ``requestEnded(_:outcome:status:reason:local:client:bytesIn:bytesOut:since:tunnel:detail:)`` does.
    func tunnelEnded(_ record: TunnelRecord, status: Int, client: ClientInfo, bytesIn: Int, bytesOut: Int, since start: NIODeadline) {
        if let (request, outcome) = record.traced {
            requestEnded(
                request, outcome: outcome, status: status, local: false, client: client, bytesIn: bytesIn, bytesOut: bytesOut,
                since: start, tunnel: true)
            return
        }
        metrics.request(
            decision: record.decision.verb, status: status, cluster: record.cluster, refusal: nil, bytesIn: bytesIn,
            bytesOut: bytesOut, tunnel: true)
        AccessLog.write(
            accessLogger, message: "tunnel", client: client, method: record.method, target: record.target, path: record.path,
            decision: record.decision.summary, plugin: record.plugin, cluster: record.cluster, status: status, bytesIn: bytesIn,
            bytesOut: bytesOut, since: start)
    }
}
