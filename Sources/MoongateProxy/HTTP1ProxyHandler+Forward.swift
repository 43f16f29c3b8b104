import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1
import NIOPosix

extension HTTP1ProxyHandler {
    /// Starts forwarding a request to `destination` (a cluster, or its own authority).
    func startExchange(
        kind: Exchange.Kind, destination: UpstreamDestination, request: PolicyRequest, instance: PolicyInstance,
        outcome: PolicyOutcome, headers: [HeaderField], head: ClientRequestHead, keepAlive: Bool, context: ChannelHandlerContext
    ) {
        let exchange = Exchange(
            kind: kind, request: request, instance: instance, outcome: outcome, upstreamKey: destination.key,
            idle: loop.pools.connections(to: destination.key), poolLimit: destination.poolLimit, clientKeepAlive: keepAlive,
            startedAt: headStartedAt)
        let (upstreamHeadBytes, requestFraming) = Self.upstreamHead(
            for: request, kind: kind, head: head, headers: headers, allocator: context.channel.allocator)
        exchange.requestFraming = requestFraming
        state = .exchanging(exchange)

        if kind == .forward, let handler = exchange.idle.acquire() {
            handler.delegate = self
            // Not flushed yet: the rest of what was read is parsed first (a request refused for its
            // framing later in this read must not reach the upstream). The read batch's end, or
            // the queue drain that got here, flushes.
            exchange.attach(handler, first: upstreamHeadBytes, flush: false)
            resumeClientReads()
            return
        }
        exchange.pending.append(upstreamHeadBytes)
        if kind == .forward, requestFraming == .none, case .cluster(let cluster) = destination,
            cluster.config.upstreamProtocol != .http1
        {
            exchange.retry = (destination, upstreamHeadBytes)
        }
        dialExchange(exchange, to: destination, context: context)
    }

    /// Dials `destination` for the exchange and attaches the connection (or answers the failure).
    func dialExchange(_ exchange: Exchange, to destination: UpstreamDestination, context: ChannelHandlerContext) {
        UpstreamDialer.connect(destination, runtime: runtime, loop: loop, on: context.eventLoop) { result in
            guard case .exchanging(let current) = self.state, current === exchange else {
                if case .success(let handler) = result { handler.close() }
                return
            }
            switch result {
            case .success(let handler):
                handler.delegate = self
                exchange.attach(handler)
                self.resumeClientReads()
            case .failure(let failure):
                // A tunnel whose parent could not be reached (TLS to it included) is a 503, as for any dial.
                let status = exchange.kind == .connectVia && failure.error is UpstreamTLSError ? 503 : failure.status
                self.exchangeFailed(exchange, status: status, reason: failure.reason, context: context)
            }
        }
    }

    /// The head sent upstream, as bytes: re-serialised from parsed fields, origin-form, one Host
    /// (the absolute-form authority wins), sanitised headers, and framing restated by the proxy —
    /// the client's own Content-Length, or chunked when the client sent Transfer-Encoding; a
    /// script never sets either (a Content-Length edit could desynchronise the upstream).
    static func upstreamHead(
        for request: PolicyRequest, kind: Exchange.Kind, head: ClientRequestHead, headers: [HeaderField],
        allocator: ByteBufferAllocator
    ) -> (ByteBuffer, BodyFraming) {
        var out = HTTP1Wire.requestHeadBuffer(request: request, fields: headers, allocator: allocator)
        let framing: BodyFraming
        switch kind {
        case .connectVia:
            let target = request.target?.description ?? request.authority ?? ""
            out.writeStaticString("CONNECT ")
            out.writeString(target)
            out.writeStaticString(" HTTP/1.1\r\n")
            HTTP1Wire.writeField("host", target, into: &out)
            framing = .none
        case .upgrade, .forward:
            HTTP1Wire.writeRequestStart(method: head.method, request: request, into: &out)
            switch head.framing {
            case .chunked:
                framing = .chunked
                out.writeStaticString("transfer-encoding: chunked\r\n")
            case .length(let length):
                framing = .length
                out.writeStaticString("content-length: ")
                out.writeString(String(length))
                out.writeStaticString("\r\n")
            case .none:
                framing = .none
            }
            if kind == .upgrade {
                out.writeStaticString("connection: upgrade\r\n")
                HTTP1Wire.writeField("upgrade", head.fields.first(named: "upgrade") ?? "websocket", into: &out)
            }
        }
        for field in headers {
            switch field.name.utf8.count {
            // Written above: Host, the framing, and (for upgrades) Connection and Upgrade.
            case 4 where field.hasName("host"), 14 where field.hasName("content-length"),
                10 where field.hasName("connection"), 7 where field.hasName("upgrade"):
                continue
            default: HTTP1Wire.writeField(field.name, field.value, into: &out)
            }
        }
        out.writeStaticString("\r\n")
        return (out, framing)
    }

    /// The exchange failed before or during the response.
    func exchangeFailed(_ exchange: Exchange, status: Int, reason: String, context: ChannelHandlerContext) {
        responseTimer?.disarm()
        exchange.upstream?.delegate = nil
        exchange.upstream?.channel?.close(promise: nil)
        if exchange.responseHeadSent {
            // Part of the response is out: the client sees a truncated, closed response.
            writeUnwrittenResponse(context: context)
            logExchange(exchange, status: exchange.status)
            state = .done
            context.close(promise: nil)
            return
        }
        logExchange(exchange, status: status, localBytes: localBodyLength(reason, exact: false, head: answeringHead), detail: reason)
        let close = !exchange.clientKeepAlive || !exchange.requestComplete || exchange.kind != .forward
        state = .idle
        respondLocally(status: status, reason: reason, close: close, context: context)
        if exchange.requestComplete && !close {
            state = .idle
            drainQueue(context: context)
        }
    }

    func startResponseTimer(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard exchange.kind == .forward, !exchange.responseHeadSent else { return }
        armResponseTimer(context: context)
    }

    /// Ends an exchange whose request and response are both complete.
    func finishIfComplete(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard exchange.requestComplete, exchange.responseComplete, case .exchanging(let current) = state, current === exchange else {
            return
        }
        responseTimer?.disarm()
        if let upstream = exchange.upstream {
            upstream.delegate = nil
            if exchange.upstreamKeepAlive, exchange.kind == .forward {
                exchange.idle.release(upstream, limit: exchange.poolLimit)
            } else {
                upstream.channel?.close(promise: nil)
            }
        }
        logExchange(exchange, status: exchange.status)
        state = .idle
        if exchange.clientKeepAlive { armIdleTimer(context: context) }
    }
}

extension HTTP1ProxyHandler: UpstreamDelegate {

    var clientIsWritable: Bool { context?.channel.isWritable ?? false }

    func upstreamBecameWritable(_ upstream: UpstreamHandler) {
        resumeClientReads()
    }

    func upstreamReadComplete(_ upstream: UpstreamHandler) {
        guard let context else { return }
        writeUnwrittenResponse(context: context)
        context.flush()
    }

    /// Body bytes up to this size are copied behind a response head not yet written (one write
    /// instead of two); larger ones go as they are.
    static let coalescedBodyLimit = 16_384

    /// An informational (1xx) answer — `100 Continue`, `103 Early Hints` — goes to the client at
    /// once with its fields, hop-by-hop ones and those its `Connection` names removed; scripts'
    /// `sanitize_response` sees final responses only. An HTTP/1.0 client gets none (RFC 9110 §15.2).
    func relayInformational(_ head: UpstreamResponseHead, exchange: Exchange, context: ChannelHandlerContext) {
        guard exchange.request.version != "HTTP/1.0" else { return }
        var out = context.channel.allocator.buffer(capacity: head.raw.readableBytes + 16)
        HTTP1Wire.writeStatusLine(head.status, into: &out)
        head.writeFields(into: &out, dropContentLength: true)
        out.writeStaticString("\r\n")
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    /// Hands a response head kept back for coalescing (and what was added to it) to the channel.
    func writeUnwrittenResponse(context: ChannelHandlerContext) {
        guard let response = unwrittenResponse else { return }
        unwrittenResponse = nil
        context.write(wrapOutboundOut(response), promise: nil)
    }

    func upstream(_ upstream: UpstreamHandler, failed error: (any Error)?) {
        guard let context, case .exchanging(let exchange) = state, exchange.upstream === upstream else { return }
        if error is HTTP2StreamRefused, let retry = exchange.retry, exchange.attempts < 3, !exchange.responseHeadSent {
            // Not processed upstream: the same head on another stream (a new connection after a GOAWAY).
            runtime.logger.debug("HTTP/2 upstream refused a stream; sending it again", metadata: ["attempt": "\(exchange.attempts)"])
            exchange.attempts += 1
            exchange.upstream = nil
            exchange.pending = [retry.head]
            dialExchange(exchange, to: retry.destination, context: context)
            return
        }
        if exchange.kind == .connectVia && !exchange.responseHeadSent {
            exchangeFailed(exchange, status: 503, reason: "the upstream proxy closed before answering", context: context)
            return
        }
        exchangeFailed(exchange, status: 502, reason: "upstream connection failed", context: context)
    }

    func upstream(_ upstream: UpstreamHandler, received part: UpstreamPart) {
        guard let context, case .exchanging(let exchange) = state, exchange.upstream === upstream else { return }
        switch part {
        case .head(let head):
            if head.code < 200 && head.code != 101 {
                relayInformational(head, exchange: exchange, context: context)
                return
            }
            responseTimer?.disarm()
            if (exchange.kind == .upgrade && head.code == 101) || (exchange.kind == .connectVia && head.code / 100 == 2) {
                // The parser ends this message next (`.end`); the switch to a relay happens then.
                exchange.tunnelHead = head
                return
            }
            let status = head.code
            let framing = HTTP1Wire.framing(status: status, request: exchange.request, upstream: head.framing)
            let closeAfter = !exchange.clientKeepAlive || exchange.kind != .forward || framing == .untilClose
            // Room for the head and a small body read with it (see `coalescedBodyLimit`).
            var capacity = head.raw.readableBytes + 64
            if framing == .length, case .length(let length) = head.framing, length <= Self.coalescedBodyLimit {
                capacity += length
            }
            var buffer = context.channel.allocator.buffer(capacity: capacity)
            HTTP1Wire.writeStatusLine(head.status, into: &buffer)
            if exchange.instance.hasResponseHooks {
                var headers = head.fields
                if let fault = exchange.instance.sanitizeResponse(for: exchange.request, status: status, headers: &headers) {
                    runtime.logger.error("sanitize_response failed", metadata: ["error": "\(fault)"])
                    exchangeFailed(exchange, status: 500, reason: "policy error", context: context)
                    return
                }
                for field in headers where !(framing.dropsContentLength && HTTP1Wire.isContentLength(field.name)) {
                    HTTP1Wire.writeField(field.name, field.value, into: &buffer)
                }
            } else {
                // No script looks at responses: the field lines that pass the floor are copied as they came.
                head.writeFields(into: &buffer, dropContentLength: framing.dropsContentLength)
            }
            HTTP1Wire.finishHead(framing: framing, close: closeAfter, into: &buffer)
            exchange.upstreamKeepAlive = head.isKeepAlive
            exchange.status = status
            exchange.responseFraming = framing
            exchange.closeClientAfter = closeAfter
            exchange.responseHeadSent = true
            unwrittenResponse = buffer
        case .body(var buffer):
            exchange.bytesToClient += buffer.readableBytes
            switch exchange.responseFraming {
            case .length, .untilClose:
                if unwrittenResponse != nil, buffer.readableBytes <= Self.coalescedBodyLimit {
                    unwrittenResponse!.writeBuffer(&buffer)
                } else {
                    writeUnwrittenResponse(context: context)
                    context.write(wrapOutboundOut(buffer), promise: nil)
                }
            case .chunked where buffer.readableBytes > 0:
                if unwrittenResponse != nil, buffer.readableBytes <= Self.coalescedBodyLimit {
                    HTTP1Wire.writeChunk(&buffer, into: &unwrittenResponse!)
                } else {
                    writeUnwrittenResponse(context: context)
                    context.write(wrapOutboundOut(HTTP1Wire.chunkPrefix(buffer.readableBytes, allocator: context.channel.allocator)), promise: nil)
                    context.write(wrapOutboundOut(buffer), promise: nil)
                    context.write(wrapOutboundOut(HTTP1Wire.chunkEnd), promise: nil)
                }
            case .chunked, .none:
                break
            }
        case .trailers(let fields):
            exchange.responseTrailers = fields
        case .end:
            if let head = exchange.tunnelHead {
                if exchange.kind == .upgrade {
                    upgradeAccepted(exchange, head: head, context: context)
                } else {
                    connectViaAccepted(exchange, head: head, context: context)
                }
                return
            }
            exchange.responseComplete = true
            let closeAfter = exchange.closeClientAfter
            // Settle the state before writing the end, then hand on any pipelined request.
            if !exchange.requestComplete {
                // The upstream answered before the request body ended: that connection is spent,
                // and the rest of the request body is dropped.
                exchange.upstreamKeepAlive = false
                exchange.requestComplete = true
                exchange.pending = []
                finishIfComplete(exchange, context: context)
                state = .discarding(close: closeAfter)
            } else {
                finishIfComplete(exchange, context: context)
                if closeAfter { state = .done }
            }
            var end =
                exchange.responseFraming != .chunked
                ? context.channel.allocator.buffer(capacity: 0)
                : exchange.responseTrailers.isEmpty
                    ? HTTP1Wire.lastChunk : HTTP1Wire.lastChunk(trailers: exchange.responseTrailers, allocator: context.channel.allocator)
            if var response = unwrittenResponse {
                unwrittenResponse = nil
                response.writeBuffer(&end)
                end = response
            }
            if closeAfter {
                let written = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(wrapOutboundOut(end), promise: written)
                watchFinalWrite(context: context)
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                if end.readableBytes > 0 { context.write(wrapOutboundOut(end), promise: nil) }
                context.flush()
                drainQueue(context: context)
            }
        }
    }
}
