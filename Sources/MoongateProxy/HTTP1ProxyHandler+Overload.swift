import MoongatePolicy
import NIOCore

/// What an HTTP/1.1 connection does while Moongate is overloaded (``OverloadGuard``): a new
/// request is refused before policy runs, and an idle keep-alive connection closes when asked.
extension HTTP1ProxyHandler {
    /// Answers `503` with `Retry-After` and closes: no policy call, nothing dialled.
    func refuseForOverload(_ head: ClientRequestHead, context: ChannelHandlerContext) {
        headStartedAt = .now()
        answeringHead = head.isHEAD
        let reason = "overloaded, retry later"
        respondLocally(
            status: 503, reason: reason, extra: [HeaderField("retry-after", runtime.overload.retryAfter)], close: true,
            context: context)
        state = .done
        runtime.overload.refused()
        logRefused(status: 503, reason: .overload, detail: reason, method: head.method, target: head.uri)
    }

    /// Closes the connection if it sits idle between keep-alive requests; a busy connection, or
    /// one that has not sent a request yet, stays.
    func shedIfIdle(context: ChannelHandlerContext) {
        guard case .idle = state, case .between = readPhase, queued.isEmpty, !lingering else { return }
        runtime.overload.shed()
        state = .done
        // The last response may still be on its way to a slow reader: close once it is written.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
