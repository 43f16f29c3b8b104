import Logging
import MoongatePolicy
import NIOCore
import NIOHTTP1

/// Answers an HTTP/1.1 connection writes itself: policy's local answers, refusals and errors.
extension HTTP1ProxyHandler {
    func finishLocally(
        _ request: PolicyRequest, _ outcome: PolicyOutcome, status: Int, body: String?, extra: [HeaderField],
        keepAlive: Bool, exact: Bool = false, reason: RefusalReason? = nil, context: ChannelHandlerContext
    ) {
        let close = !keepAlive || request.isConnect
        respondLocally(status: status, reason: body, extra: extra, close: close, exact: exact, context: context)
        logLocal(
            request, outcome, status: status, reason: reason, bytesOut: localBodyLength(body, exact: exact, head: answeringHead),
            since: headStartedAt)
        if request.isConnect {
            state = .done  // nothing after a refused CONNECT is processed
        }
    }

    /// Writes a complete local response; `close` ends the connection after it. A reason is sent
    /// as a line of text; `exact` sends it as it is (a script's `respond` body), and a script's
    /// own content-type stands.
    func respondLocally(
        status: Int, reason: String?, extra: [HeaderField] = [], close: Bool, exact: Bool = false,
        context: ChannelHandlerContext
    ) {
        let body = exact ? (reason ?? "") : (reason.map { $0 + "\n" } ?? "")
        var buffer = context.channel.allocator.buffer(capacity: 128 + body.utf8.count)
        HTTP1Wire.writeStatusLine(HTTPResponseStatus(statusCode: status), into: &buffer)
        var typed = false
        for field in extra where !HTTP1Wire.isContentLength(field.name) && !SanitizationFloor.isHopByHop(field.name) {
            typed = typed || field.hasName("content-type")
            HTTP1Wire.writeField(field.name, field.value, into: &buffer)
        }
        if !typed { buffer.writeStaticString("content-type: text/plain; charset=utf-8\r\n") }
        HTTP1Wire.writeField("content-length", String(body.utf8.count), into: &buffer)
        HTTP1Wire.finishHead(framing: .length, close: close, into: &buffer)
        if !answeringHead { buffer.writeString(body) }
        guard close else {
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            if case .idle = state { state = .discarding(close: false) }
            return
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: done)
        watchFinalWrite(context: context)
        do {
            // Strong captures here and in other one-shot callbacks: a weak reference would give this
            // handler a side table, and every retain and release of it would take the slow path.
            done.futureResult.assumeIsolated().whenComplete { _ in self.lingeringClose(context: context) }
            if case .idle = state { state = .discarding(close: true) }
        }
    }

    /// Closes after a final response without destroying it: a close with unread input makes the
    /// kernel send a reset, which can discard the response before the client reads it. So the
    /// output is shut down first, input is drained, and the socket closes at the client's EOF or
    /// after a second.
    func lingeringClose(context: ChannelHandlerContext) {
        guard context.channel.isActive, !lingering else { return }
        lingering = true
        context.close(mode: .output, promise: nil)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }
}
