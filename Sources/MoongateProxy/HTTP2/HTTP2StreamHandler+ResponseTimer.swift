import Logging
import MoongateConfig
import NIOCore

/// `timeouts.upstream_response` on HTTP/2 streams forwarded to an HTTP/1.1 upstream, as on
/// HTTP/1.1: once the request is complete, an upstream that sends no response head in time gets
/// its connection closed and the stream a `504`. While the request body is still arriving the
/// timer waits (the stream idle timeout covers a body that stalls).
extension HTTP2StreamHandler {
    func armResponseTimer(for exchange: Exchange, context: ChannelHandlerContext) {
        let timeout = loop.policy.settings.timeouts.upstreamResponse.timeAmount
        let bound = NIOLoopBound((self, exchange), eventLoop: context.eventLoop)
        responseTimer?.cancel()
        responseTimer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, exchange) = bound.value
            handler.responseTimerFired(exchange)
        }
    }

    private func responseTimerFired(_ exchange: Exchange) {
        responseTimer = nil
        guard let context, case .exchanging(let current, let headSent) = state, current === exchange, !headSent else { return }
        guard exchange.requestComplete else {
            armResponseTimer(for: exchange, context: context)
            return
        }
        runtime.logger.info("upstream response timed out", metadata: ["upstream": "\(exchange.upstreamKey)"])
        exchangeFailed(exchange, status: 504, reason: "upstream response timed out")
    }
}
