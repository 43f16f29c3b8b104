import Logging
import NIOCore

/// Pipelined requests and refusals: requests are answered in order, and a refused request (malformed,
/// or too slow) is answered in its turn, after the responses ahead of it are complete.
extension HTTP1ProxyHandler {
    /// Answered and closing: nothing more from the client is used.
    var isFinished: Bool {
        switch state {
        case .done, .discarding: return !rawMode
        default: return false
        }
    }

    /// True while a request that has fully arrived is still being answered.
    var busyWithCompleteRequest: Bool {
        if case .exchanging(let exchange) = state { return exchange.requestComplete }
        return false
    }

    /// Refuses the request being read (`error`: malformed, or a reading deadline passed); the
    /// connection closes after the answer, and nothing of that request reaches any upstream.
    /// With responses still due ahead of it, the refusal waits for them (in order, as pipelining
    /// requires) and nothing more is read meanwhile.
    func refuseRequest(_ error: ClientRequestError, context: ChannelHandlerContext) {
        if lingering { return }
        readTimer?.disarm()
        if !queued.isEmpty || busyWithCompleteRequest {
            dropQueuedPartialRequest()
            deferredRefusal = error
            return
        }
        let reason = error.status == 408 ? error.reason : "malformed request: \(error.reason)"
        switch state {
        case .idle:
            headStartedAt = .now()
            logRefused(status: error.status, reason: error.status == 408 ? .timeout : .malformed, detail: error.reason)
            // A request whose head was never handled: its answer has a body even if the one
            // before it answered a HEAD.
            answeringHead = false
            respondLocally(status: error.status, reason: reason, close: true, context: context)
        case .exchanging(let exchange):
            // The refused request is the one being forwarded: its upstream connection is dropped,
            // with whatever of it was written and not yet flushed.
            exchange.upstream?.delegate = nil
            exchange.upstream?.channel?.close(promise: nil)
            exchange.pending = []
            responseTimer?.disarm()
            if exchange.responseHeadSent {
                // Part of the response is out: the client sees a truncated, closed response.
                writeUnwrittenResponse(context: context)
                logExchange(exchange, status: exchange.status)
                context.close(promise: nil)
            } else {
                logExchange(exchange, status: error.status)
                respondLocally(status: error.status, reason: reason, close: true, context: context)
            }
        case .discarding, .done:
            // This request has had its answer already (still being written, perhaps): no second
            // one, just the close.
            lingeringClose(context: context)
        case .connecting:
            context.close(promise: nil)
        }
        state = .done
        queued = []
    }

    /// Removes the queued parts of the request being read (all after the last complete request),
    /// so that nothing of a refused request is ever handled or forwarded.
    private func dropQueuedPartialRequest() {
        guard let last = queued.last else { return }
        if case .end = last { return }
        if let end = queued.lastIndex(where: { if case .end = $0 { return true } else { return false } }) {
            queued.removeSubrange((end + 1)...)
        } else {
            queued.removeAll()
        }
    }

    /// Hands queued pipelined requests on once the connection is free, flushes what they wrote
    /// upstream, answers a refusal whose turn has come, and resumes reading.
    func drainQueue(context: ChannelHandlerContext) {
        while !queued.isEmpty && !busyWithCompleteRequest {
            switch state {
            case .done:
                queued = []
            case .connecting:
                return
            default:
                handle(queued.removeFirst(), context: context)
            }
        }
        if case .exchanging(let exchange) = state { exchange.flushUpstream() }
        if queued.isEmpty, case .idle = state {
            if let refusal = deferredRefusal {
                deferredRefusal = nil
                refuseRequest(refusal, context: context)
                resumeClientReads()  // the lingering close reads until the client's EOF
                return
            }
            if clientInputClosed || closeWhenIdle {
                context.close(promise: nil)
                return
            }
            armIdleTimer(context: context)
        }
        if queued.count < Self.queueLimit && deferredRefusal == nil { resumeClientReads() }
    }
}
