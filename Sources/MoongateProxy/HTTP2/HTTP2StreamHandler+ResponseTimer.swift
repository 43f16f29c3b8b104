import Logging
import MoongateConfig
import NIOCore

/// `timeouts.upstream_response` on HTTP/2 streams forwarded to an HTTP/1.1 upstream, as on
/// HTTP/1.1: once the request is complete, an upstream that sends no response head in time gets
/// its connection closed and the stream a `504`. While the request body is still arriving the
/// timer waits (the stream idle timeout covers a body that stalls).
extension HTTP2StreamHandler {
    func armResponseTimer(context: HTTP2StreamContext) {
        responseDeadline = .now() + loop.policy.settings.timeouts.upstreamResponse.timeAmount
    }

    /// The deadline passed (seen by the connection's ``HTTP2StreamClock``).
    func responseTimerFired() {
        responseDeadline = nil
        guard let context, case .exchanging(let exchange, let headSent) = state, !headSent else { return }
        guard exchange.requestComplete else {
            armResponseTimer(context: context)
            return
        }
        runtime.logger.info("upstream response timed out", metadata: ["upstream": "\(exchange.upstreamKey)"])
        exchangeFailed(exchange, status: 504, reason: "upstream response timed out")
    }
}
