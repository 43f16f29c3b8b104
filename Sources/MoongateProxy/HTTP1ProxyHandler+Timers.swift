#if canImport(Glibc)
import Glibc
#endif
import Logging
import MoongatePolicy
import NIOCore

/// The deadlines of an HTTP/1.1 client connection (``HTTP1Deadlines``): request headers, request
/// body, keep-alive idle, upstream response and client write progress. Each timer is kept per
/// connection and re-armed lazily by moving its deadline (``DeadlineTimer``), so a keep-alive
/// request costs a clock read or two, no timer-queue work.
extension HTTP1ProxyHandler {
    func cancelTimers() {
        readTimer?.cancel()
        idleTimer?.cancel()
        writeTimer?.cancel()
        responseTimer?.cancel()
    }

    // MARK: - Reading requests

    /// A new connection has `request_headers` from the accept to send its first head.
    func armFreshTimer(context: ChannelHandlerContext) {
        readTimer(context: context).arm(in: deadlines.requestHeaders)
    }

    private func readTimer(context: ChannelHandlerContext) -> DeadlineTimer {
        if let readTimer { return readTimer }
        // Unowned: the timer lives and dies with this handler (no side table, see respondLocally).
        let timer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.readTimedOut() }
        readTimer = timer
        return timer
    }

    /// After a read: a head that started in it gets its deadline; body progress moves the body's.
    func moveReadDeadline() {
        guard let context else { return }
        switch readPhase {
        case .head where headStarting:
            headStarting = false
            readTimer(context: context).arm(in: deadlines.requestHeaders)
        case .body where bodyProgress:
            bodyProgress = false
            let now = NIODeadline.now()
            if bodyStarting {
                bodyStarting = false
                bodyDeadline = now + deadlines.requestBody
            }
            readTimer(context: context).arm(at: min(now + deadlines.requestBodyIdle, bodyDeadline))
        default:
            break
        }
    }

    private func readTimedOut() {
        guard let context, !lingering, deferredRefusal == nil else { return }
        switch readPhase {
        case .fresh:
            // Nothing was sent: nothing to answer.
            guard case .idle = state else { return }
            state = .done
            context.close(promise: nil)
        case .head where pendingRead:
            // Reading waits for pipelined responses ahead (the queue is full): not the client's delay.
            readTimer(context: context).arm(in: deadlines.requestHeaders)
        case .head:
            refuseRequest(ClientRequestError(status: 408, reason: "request headers timed out"), context: context)
        case .body:
            bodyTimedOut(context: context)
        case .between:
            break
        }
    }

    /// No body progress in `request_body_idle`, or the body is past `request_body`. When the
    /// proxy itself holds the reads, the client is not the one stalling: the upstream that stopped
    /// taking the body fails the exchange, and a wait for a dial or for pipelined responses ahead
    /// extends the deadline.
    private func bodyTimedOut(context: ChannelHandlerContext) {
        if pendingRead {
            if queued.isEmpty, case .exchanging(let exchange) = state, !exchange.requestComplete,
                let upstream = exchange.upstream, !(upstream.channel?.isWritable ?? true)
            {
                exchangeFailed(exchange, status: 504, reason: "the upstream stopped taking the request body", context: context)
                return
            }
            readTimer(context: context).arm(in: deadlines.requestBodyIdle)
            return
        }
        refuseRequest(ClientRequestError(status: 408, reason: "request body timed out"), context: context)
    }

    // MARK: - Between requests

    /// The connection is idle (answered everything, reading between requests): it closes without
    /// an answer after `keepalive_idle` unless a request starts.
    func armIdleTimer(context: ChannelHandlerContext) {
        guard case .between = readPhase, case .idle = state, queued.isEmpty, deferredRefusal == nil else { return }
        if idleTimer == nil {
            idleTimer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.idleTimedOut() }
        }
        idleTimer?.arm(in: deadlines.keepaliveIdle)
    }

    private func idleTimedOut() {
        guard let context, case .between = readPhase, case .idle = state, queued.isEmpty, deferredRefusal == nil else {
            return
        }
        state = .done
        context.close(promise: nil)
    }

    // MARK: - Answering

    /// The upstream-response timeout of the current exchange: 504 when no response head arrives in time.
    func armResponseTimer(context: ChannelHandlerContext) {
        if responseTimer == nil {
            responseTimer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.responseTimedOut() }
        }
        responseTimer?.arm(in: deadlines.upstreamResponse)
    }

    func responseTimedOut() {
        guard let context, case .exchanging(let exchange) = state, !exchange.responseHeadSent else { return }
        exchangeFailed(exchange, status: 504, reason: "upstream timed out", context: context)
    }

    /// Bytes wait for the client (it became unwritable): unless they start moving within
    /// `response_write_idle`, the connection is dropped. Buffers stay bounded meanwhile, since
    /// upstream reads wait for the client's writability.
    func watchWriteProgress(context: ChannelHandlerContext) {
        writeMark = bufferedTowardClient(context)
        if writeTimer == nil {
            writeTimer = DeadlineTimer(eventLoop: context.eventLoop) { [unowned self] in self.writeTimedOut() }
        }
        writeTimer?.arm(in: deadlines.responseWriteIdle)
    }

    /// A final response was written and flushed before a close: the close waits for it, but not
    /// forever. Most are in the kernel already, and then nothing is watched (no timer is made).
    func watchFinalWrite(context: ChannelHandlerContext) {
        guard bufferedTowardClient(context) > 0 else { return }
        watchWriteProgress(context: context)
    }

    private func bufferedTowardClient(_ context: ChannelHandlerContext) -> Int {
        ((try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? nil) ?? 0
    }

    private func writeTimedOut() {
        guard let context, context.channel.isActive else { return }
        let buffered = bufferedTowardClient(context)
        if buffered == 0 { return }
        if buffered < writeMark {
            // The client reads, slowly: keep watching.
            writeKeptMoving(buffered)
            return
        }
        #if os(Linux)
        // The bytes buffered here move only when the kernel's send buffer has room, which a slow
        // reader frees slowly: the kernel says when it last sent the client data.
        if let socket = context.channel as? any SocketOptionProvider {
            socket.getTCPInfo().assumeIsolated().whenComplete { result in
                if case .success(let info) = result,
                    TimeAmount.milliseconds(Int64(info.tcpi_last_data_sent)) < self.deadlines.responseWriteIdle
                {
                    self.writeKeptMoving(buffered)
                } else {
                    self.dropStalledReader(buffered: buffered)
                }
            }
            return
        }
        #endif
        dropStalledReader(buffered: buffered)
    }

    private func writeKeptMoving(_ buffered: Int) {
        writeMark = buffered
        writeTimer?.arm(in: deadlines.responseWriteIdle)
    }

    private func dropStalledReader(buffered: Int) {
        guard let context, context.channel.isActive else { return }
        runtime.logger.info(
            "client stopped reading; connection dropped",
            metadata: ["client": "\(client.ip)", "buffered": "\(buffered)"])
        context.close(promise: nil)
    }
}
