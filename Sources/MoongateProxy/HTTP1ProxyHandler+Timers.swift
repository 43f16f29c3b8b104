import NIOCore

/// The request-headers and upstream-response timeouts of an HTTP/1.1 client connection.
extension HTTP1ProxyHandler {
    /// The request-headers timeout: a connection that sends no complete head in time gets a 408
    /// (or, when it has been served before and is idle, is closed). One timer per connection is
    /// kept and re-armed lazily from a deadline, so a keep-alive request costs no timer work.
    func armHeadTimer(context: ChannelHandlerContext) {
        if headTimer == nil {
            // Unowned: the timer lives and dies with this handler (no side table, see respondLocally).
            headTimer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.headTimedOut() }
        }
        headTimer?.arm(in: loop.policy.settings.requestHeadersTimeout)
    }

    func headTimedOut() {
        guard let context, case .idle = state else { return }
        if served == 0 {
            respondLocally(status: 408, reason: "request headers timed out", close: true, context: context)
        } else {
            context.close(promise: nil)
        }
        state = .done
    }

    /// A head arrived: the request-headers timer stands down (it stays scheduled, idle).
    func disarmHeadTimer() { headTimer?.disarm() }

    /// The upstream-response timeout of the current exchange: 504 when no response head arrives in time.
    func armResponseTimer(context: ChannelHandlerContext) {
        if responseTimer == nil {
            responseTimer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.responseTimedOut() }
        }
        responseTimer?.arm(in: loop.policy.settings.upstreamResponseTimeout)
    }

    func responseTimedOut() {
        guard let context, case .exchanging(let exchange) = state, !exchange.responseHeadSent else { return }
        exchangeFailed(exchange, status: 504, reason: "upstream timed out", context: context)
    }
}
