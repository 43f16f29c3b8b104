import Logging
import MoongatePolicy
import NIOCore

/// The access-log line, the request metrics and the trace of each request an HTTP/1.1 connection
/// answers (all through ``ProxyRuntime/requestEnded(_:outcome:status:reason:local:client:bytesIn:bytesOut:since:tunnel:)``).
extension HTTP1ProxyHandler {
    /// A request answered locally (policy's answer, a cap, a failed dial).
    func logLocal(
        _ request: PolicyRequest, _ outcome: PolicyOutcome, status: Int, reason: RefusalReason? = nil, bytesOut: Int,
        detail: String? = nil, since start: NIODeadline
    ) {
        runtime.requestEnded(
            request, outcome: outcome, status: status, reason: reason, local: true, client: client, bytesIn: 0, bytesOut: bytesOut,
            since: start, detail: detail)
    }

    /// A request refused before policy (malformed, or no policy loaded).
    func logRefused(status: Int, reason: RefusalReason, detail: String, method: String? = nil, target: String? = nil) {
        runtime.requestRefused(
            status: status, reason: reason, detail: detail, client: client, method: method, target: target, since: headStartedAt)
    }

    func logExchange(_ exchange: Exchange, status: Int, localBytes: Int = 0, detail: String? = nil) {
        // Before the upstream's head is out, the status is the proxy's own (a failed dial, the floor).
        let local = !exchange.responseHeadSent
        runtime.requestEnded(
            exchange.request, outcome: exchange.outcome, status: status, local: local, client: client,
            bytesIn: exchange.bytesFromClient, bytesOut: local ? localBytes : exchange.bytesToClient, since: exchange.startedAt,
            detail: detail)
        if exchange.instance.hasLogHooks {
            exchange.instance.log(request: exchange.request, status: status)
        }
    }
}
