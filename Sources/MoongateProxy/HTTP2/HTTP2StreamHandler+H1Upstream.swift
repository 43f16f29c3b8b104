import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Exchanges of an HTTP/2 stream with HTTP/1.1 upstreams (pooled per event loop): the request head
/// re-serialised as HTTP/1.1, DATA ↔ body with the proxy's own framing, and the response back as
/// HEADERS and DATA; an HTTP/2 cluster takes the request as a stream instead
/// (``HTTP2StreamHandler/startH2Forward(to:request:instance:outcome:headers:endStream:context:)``).
extension HTTP2StreamHandler {
    func startUpgrade(
        _ upgrade: String, to destination: UpstreamDestination, request: PolicyRequest, instance: PolicyInstance,
        outcome: PolicyOutcome, headers: [HeaderField], endStream: Bool, context: HTTP2StreamContext
    ) {
        let head = Self.upgradeHead(request, upgrade: upgrade, headers: headers, allocator: context.allocator)
        startExchange(
            to: destination, request: request, instance: instance, outcome: outcome, headers: headers, endStream: endStream,
            kind: .upgrade, head: (head, .length), context: context)
    }

    func startExchange(
        to destination: UpstreamDestination, request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome,
        headers: [HeaderField], endStream: Bool, kind: Exchange.Kind = .forward, head prepared: (ByteBuffer, BodyFraming)? = nil,
        context: HTTP2StreamContext
    ) {
        // Streams of the cluster's HTTP/2 connection; an `auto` cluster not yet known on this loop
        // goes through the exchange path, whose dialer learns what its server speaks.
        if kind == .forward, case .cluster(let cluster) = destination, upstreams.speaks(cluster) == .http2 {
            startH2Forward(
                to: cluster, request: request, instance: instance, outcome: outcome, headers: headers, endStream: endStream,
                context: context)
            return
        }
        let exchange = Exchange(
            kind: kind, request: request, instance: instance, outcome: outcome, upstreamKey: destination.key,
            idle: loop.pools.connections(to: destination.key), poolLimit: destination.poolLimit, clientKeepAlive: true,
            startedAt: startedAt)
        let (head, framing) =
            prepared ?? Self.upstreamHead(request, headers: headers, endStream: endStream, allocator: context.allocator)
        exchange.requestFraming = framing
        state = .exchanging(exchange, headSent: false)
        if kind == .forward { armResponseTimer(context: context) }
        if kind == .forward, let handler = exchange.idle.acquire() {
            handler.delegate = self
            exchange.attach(handler, first: head)
        } else {
            exchange.pending.append(head)
            UpstreamDialer.connect(destination, runtime: runtime, loop: loop, on: context.eventLoop) { result in
                guard case .exchanging(let current, _) = self.state, current === exchange else {
                    if case .success(let handler) = result { handler.close() }
                    return
                }
                switch result {
                case .success(let handler):
                    handler.delegate = self
                    exchange.attach(handler)
                    self.resumeClientReads()
                case .failure(let failure):
                    self.exchangeFailed(exchange, status: failure.status, reason: failure.reason)
                }
            }
        }
        if endStream {
            exchange.requestComplete = true
            exchange.sendEnd()
            // A WebSocket stream ended by its HEADERS (CX-EXT-4) half-closes the origin's side once the relay is up.
        }
    }

    /// The HTTP/1.1 head for an HTTP/2 request: origin-form, Host from `:authority`, the sanitised
    /// fields, and framing stated by the proxy: none when HEADERS ended the stream, the client's
    /// `content-length` when it sent one (HTTP/2 checks it against the DATA received), else chunked.
    static func upstreamHead(
        _ request: PolicyRequest, headers: [HeaderField], endStream: Bool, allocator: ByteBufferAllocator
    ) -> (ByteBuffer, BodyFraming) {
        var out = HTTP1Wire.requestHeadBuffer(request: request, fields: headers, allocator: allocator)
        HTTP1Wire.writeRequestStart(method: request.method, request: request, into: &out)
        let framing: BodyFraming
        if endStream {
            framing = .none
        } else if let length = headers.first(named: "content-length") {
            framing = .length
            HTTP1Wire.writeField("content-length", length, into: &out)
        } else {
            framing = .chunked
            out.writeStaticString("transfer-encoding: chunked\r\n")
        }
        for field in headers {
            switch field.name.utf8.count {
            case 4 where field.hasName("host"), 14 where field.hasName("content-length"), 2 where field.hasName("te"):
                continue
            default: HTTP1Wire.writeField(field.name, field.value, into: &out)
            }
        }
        out.writeStaticString("\r\n")
        return (out, framing)
    }

    var clientIsWritable: Bool { context?.isWritable ?? false }

    func upstream(_ upstream: UpstreamHandler, received part: UpstreamPart) {
        guard let context, case .exchanging(let exchange, let headSent) = state, exchange.upstream === upstream else { return }
        lastActivity = .now()
        switch part {
        case .head(let head):
            if (exchange.kind == .upgrade && head.code == 101) || (exchange.kind == .connectVia && head.code / 100 == 2) {
                exchange.tunnelHead = head  // the switch happens at the end of this message
                return
            }
            if head.code < 200 {
                // 1xx (100 Continue, 103 Early Hints): a HEADERS frame of its own before the final
                // response (RFC 9113 §8.1), minus hop-by-hop fields and those `Connection` names.
                guard head.code != 101 else { return }
                var informational = HPACKHeaders([(":status", String(head.code))])
                var fields = head.fields
                SanitizationFloor.strip(&fields)
                informational.addLowercased(fields)
                context.write(.headers(.init(headers: informational, endStream: false)))
                return
            }
            exchange.status = head.code
            exchange.upstreamKeepAlive = head.isKeepAlive && exchange.kind == .forward
            var headers = HPACKHeaders.response(status: head.code, room: head.ranges.count)
            if exchange.instance.hasResponseHooks {
                var fields = head.fields
                if let fault = exchange.instance.sanitizeResponse(for: exchange.request, status: head.code, headers: &fields) {
                    runtime.logger.debug("sanitize_response failed", metadata: ["plugin": "\(fault.plugin)"])
                    exchangeFailed(exchange, status: 500, reason: "policy error")
                    return
                }
                headers.addLowercased(fields)
            } else {
                // No script reads the response: only the floor applies, straight from the bytes.
                head.addFields(to: &headers)
            }
            let bodiless = exchange.request.method == "HEAD" || head.code == 204 || head.code == 304
            exchange.responseHeadSent = true
            state = .exchanging(exchange, headSent: true)
            context.write(.headers(.init(headers: headers, endStream: false)))
            if bodiless { exchange.responseFraming = .none }
        case .trailers(let fields):
            exchange.responseTrailers = fields
        case .body(let bytes):
            guard headSent else { return }
            exchange.bytesToClient += bytes.readableBytes
            writeHeldData(endStream: false, context: context)
            heldData = bytes
        case .end:
            if let tunnelHead = exchange.tunnelHead {
                tunnelAccepted(exchange, head: tunnelHead, context: context)
                return
            }
            guard headSent else { return }
            // A refused upgrade is an ordinary response, and the extended CONNECT stream ends with it.
            if exchange.kind != .forward { exchange.requestComplete = true }
            // Done with the upstream first: the END_STREAM below can close this stream at once
            // (its channelInactive would otherwise take the connection down with it).
            exchange.responseComplete = true
            finishIfComplete(exchange)
            if let trailers = Self.trailerBlock(exchange.responseTrailers) {
                writeHeldData(endStream: false, context: context)
                context.write(.headers(.init(headers: trailers, endStream: true)))
            } else {
                if heldData == nil { heldData = context.allocator.buffer(capacity: 0) }
                writeHeldData(endStream: true, context: context)
            }
            context.flush()
        }
    }

    /// The trailing HEADERS block for an HTTP/1.1 response's trailer fields; nil when none may go on.
    static func trailerBlock(_ trailers: [HeaderField]) -> HPACKHeaders? {
        guard !trailers.isEmpty else { return nil }
        var block = HPACKHeaders()
        block.addLowercased(trailers) { TrailerFields.isCarried($0.name) }
        return block.isEmpty ? nil : block
    }

    /// Sends the held body chunk as a DATA frame.
    func writeHeldData(endStream: Bool, context: HTTP2StreamContext) {
        guard let bytes = heldData else { return }
        heldData = nil
        // No clock read here: every caller follows a part of the upstream's response in the same
        // read, which set `lastActivity`.
        guardian.sentData()
        context.write(.data(.init(data: .byteBuffer(bytes), endStream: endStream)))
    }

    func upstreamBecameWritable(_ upstream: UpstreamHandler) { resumeClientReads() }

    func upstreamReadComplete(_ upstream: UpstreamHandler) {
        guard let context else { return }
        writeHeldData(endStream: false, context: context)
        context.flush()
    }

    func upstream(_ upstream: UpstreamHandler, failed error: (any Error)?) {
        guard case .exchanging(let exchange, _) = state, exchange.upstream === upstream else { return }
        exchangeFailed(exchange, status: 502, reason: "upstream connection failed")
    }

    /// Both directions are done: a keep-alive upstream connection goes back to this loop's pool
    /// (else it closes), and the exchange is logged.
    func finishIfComplete(_ exchange: Exchange) {
        guard exchange.requestComplete, exchange.responseComplete else { return }
        if let upstream = exchange.upstream {
            upstream.delegate = nil
            if exchange.upstreamKeepAlive {
                exchange.idle.release(upstream, limit: exchange.poolLimit)
            } else {
                upstream.close()
            }
        }
        state = .closed
        log(exchange.request, outcome: exchange.outcome, status: exchange.status, bytesIn: exchange.bytesFromClient, bytesOut: exchange.bytesToClient)
        if exchange.instance.hasLogHooks { exchange.instance.log(request: exchange.request, status: exchange.status) }
    }

    func exchangeFailed(_ exchange: Exchange, status: Int, reason: String) {
        exchange.upstream?.delegate = nil
        exchange.upstream?.close()
        guard let context else { return }
        if case .exchanging(_, headSent: true) = state {
            // Part of the response is out: only a reset can tell the client it is incomplete.
            log(exchange.request, outcome: exchange.outcome, status: exchange.status, bytesIn: exchange.bytesFromClient, bytesOut: exchange.bytesToClient)
            reset(.internalError, context: context)
            return
        }
        answer(LocalAnswer(status: status, body: reason, keepAlive: true), request: exchange.request, outcome: exchange.outcome, context: context)
    }
}
