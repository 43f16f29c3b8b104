import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP2

/// A request forwarded to an HTTP/2 cluster (`protocol: http2`): it becomes a stream of one of the
/// loop's upstream connections (``HTTP2UpstreamPool``): HEADERS, DATA and trailers go on as they
/// are (after validation and policy's header edits), the answer comes back the same way, with
/// back-pressure both ways on the two streams. A request the upstream refused without processing
/// it (REFUSED_STREAM before any answer, or a stream above its GOAWAY's last stream id) is sent
/// again on another stream when it had no body, up to three attempts.
final class H2Forward {
    let request: PolicyRequest
    let instance: PolicyInstance
    let outcome: PolicyOutcome
    let cluster: ClusterTarget
    let head: HPACKHeaders
    /// A request without a body can be sent again.
    let retryable: Bool
    var stream: HTTP2UpstreamStream?
    /// DATA that came before the upstream stream was open.
    var pendingBody: [ByteBuffer] = []
    var requestComplete = false
    var responseHeadSent = false
    var status = 0
    var attempts = 0
    var bytesFromClient = 0
    var bytesToClient = 0

    init(request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome, cluster: ClusterTarget, head: HPACKHeaders, retryable: Bool) {
        self.request = request
        self.instance = instance
        self.outcome = outcome
        self.cluster = cluster
        self.head = head
        self.retryable = retryable
    }
}

/// A connection's reservation was given back (see ``HTTP2UpstreamConnection/keepReservation()``).
private struct OverCommitted: Error {}

extension HTTP2StreamHandler: HTTP2UpstreamStreamDelegate {
    /// The request head toward an HTTP/2 upstream: pseudo-headers from the validated request, then
    /// policy's fields without Host (that is `:authority`) and connection-specific ones. `:scheme`
    /// is the upstream connection's (`https` over TLS).
    static func upstreamH2Head(_ request: PolicyRequest, headers: [HeaderField], scheme: String) -> HPACKHeaders {
        var path = request.path ?? "/"
        if let query = request.query { path += "?" + query }
        var out = HPACKHeaders([
            (":method", request.method), (":scheme", scheme), (":authority", request.authority ?? ""),
            (":path", path),
        ])
        for field in headers {
            let name = field.name.lowercased()
            switch name {
            case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade": continue
            case "te" where field.value != "trailers": continue
            default: out.add(name: name, value: field.value)
            }
        }
        return out
    }

    func startH2Forward(
        to cluster: ClusterTarget, request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome,
        headers: [HeaderField], endStream: Bool, context: HTTP2StreamContext
    ) {
        let forward = H2Forward(
            request: request, instance: instance, outcome: outcome, cluster: cluster,
            head: Self.upstreamH2Head(request, headers: headers, scheme: cluster.config.tls == nil ? "http" : "https"),
            retryable: endStream)
        forward.requestComplete = endStream
        state = .forwardingH2(forward)
        openUpstreamStream(forward, context: context)
    }

    private func openUpstreamStream(_ forward: H2Forward, context: HTTP2StreamContext) {
        forward.attempts += 1
        let connection = upstreams.connection(to: forward.cluster, runtime: runtime)
        let handler = HTTP2UpstreamStream(connection: connection, delegate: self)
        let bound = NIOLoopBound(handler, eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        let opened = connection.ready.assumeIsolated().flatMap { () -> EventLoopFuture<any Channel> in
            guard let multiplexer = connection.multiplexer else {
                return eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
            }
            guard connection.keepReservation() else { return eventLoop.makeFailedFuture(OverCommitted()) }
            return multiplexer.createStreamChannel { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(bound.value) }
            }
        }
        opened.whenComplete { result in
            guard case .forwardingH2(let current) = self.state, current === forward else {
                handler.cancel()
                if case .failure(let error) = result, !(error is OverCommitted) { handler.releaseSlot() }
                return
            }
            switch result {
            case .success:
                forward.stream = handler
                let body = forward.pendingBody
                forward.pendingBody = []
                handler.send(.headers(.init(headers: forward.head, endStream: forward.requestComplete && body.isEmpty)))
                for (index, bytes) in body.enumerated() {
                    let last = index == body.count - 1
                    handler.send(.data(.init(data: .byteBuffer(bytes), endStream: last && forward.requestComplete)))
                }
                handler.flush()
                self.resumeClientReads()
            case .failure(is OverCommitted):
                forward.attempts -= 1  // not an attempt: the connection had no room after all
                self.openUpstreamStream(forward, context: context)
            case .failure(let error):
                handler.releaseSlot()
                self.runtime.logger.info("HTTP/2 upstream unreachable", metadata: ["cluster": "\(forward.cluster.config.name)", "error": "\(error)"])
                let (status, reason) = UpstreamDialer.failure(error)
                self.h2ForwardFailed(forward, status: status, reason: reason)
            }
        }
    }

    func forwardBody(_ bytes: ByteBuffer, _ forward: H2Forward) {
        forward.bytesFromClient += bytes.readableBytes
        if let stream = forward.stream {
            stream.send(.data(.init(data: .byteBuffer(bytes), endStream: false)))
        } else {
            forward.pendingBody.append(bytes)
        }
    }

    func forwardEnd(_ forward: H2Forward) {
        guard !forward.requestComplete else { return }
        forward.requestComplete = true
        guard let stream = forward.stream else { return }  // sent with the pending body once open
        let empty = ByteBuffer()
        stream.send(.data(.init(data: .byteBuffer(empty), endStream: true)))
        stream.flush()
    }

    func forwardTrailers(_ trailers: [HeaderField], _ forward: H2Forward) {
        guard let stream = forward.stream, !forward.requestComplete else {
            forwardEnd(forward)
            return
        }
        forward.requestComplete = true
        var block = HPACKHeaders()
        for field in trailers { block.add(name: field.name, value: field.value) }
        stream.send(.headers(.init(headers: block, endStream: true)))
        stream.flush()
    }

    // MARK: - What the upstream stream reports

    func upstreamStream(_ stream: HTTP2UpstreamStream, head: HPACKHeaders, endStream: Bool) {
        guard let context, case .forwardingH2(let forward) = state, forward.stream === stream else { return }
        lastActivity = .now()
        let status = Int(head.first(name: ":status") ?? "") ?? 502
        forward.status = status
        var fields: [HeaderField] = []
        for (name, value, _) in head where name.utf8.first != UInt8(ascii: ":") { fields.append(HeaderField(name, value)) }
        if let fault = forward.instance.sanitizeResponse(for: forward.request, status: status, headers: &fields) {
            runtime.logger.debug("sanitize_response failed", metadata: ["plugin": "\(fault.plugin)"])
            stream.cancel()
            h2ForwardFailed(forward, status: 500, reason: "policy error")
            return
        }
        var out = HPACKHeaders.response(status: status, room: fields.count)
        out.addLowercased(fields) { !SanitizationFloor.isHopByHop($0.name) && !$0.hasName("transfer-encoding") }
        forward.responseHeadSent = true
        if endStream { finishH2Forward(forward) }
        context.write(.headers(.init(headers: out, endStream: endStream)))
    }

    func upstreamStream(_ stream: HTTP2UpstreamStream, data: ByteBuffer, endStream: Bool) {
        guard let context, case .forwardingH2(let forward) = state, forward.stream === stream else { return }
        lastActivity = .now()
        guardian.sentData()
        forward.bytesToClient += data.readableBytes
        if endStream { finishH2Forward(forward) }
        context.write(.data(.init(data: .byteBuffer(data), endStream: endStream)))
        if endStream { context.flush() }
    }

    func upstreamStream(_ stream: HTTP2UpstreamStream, trailers: HPACKHeaders) {
        guard let context, case .forwardingH2(let forward) = state, forward.stream === stream else { return }
        var out = HPACKHeaders()
        for (name, value, _) in trailers where name.utf8.first != UInt8(ascii: ":") && !SanitizationFloor.isHopByHop(name) {
            out.add(name: name, value: value)
        }
        finishH2Forward(forward)
        context.writeAndFlush(.headers(.init(headers: out, endStream: true)))
    }

    func upstreamStreamReadComplete(_ stream: HTTP2UpstreamStream) { context?.flush() }

    func upstreamStreamBecameWritable(_ stream: HTTP2UpstreamStream) { resumeClientReads() }

    func upstreamStream(_ stream: HTTP2UpstreamStream, failed code: HTTP2ErrorCode?, refused: Bool) {
        guard let context, case .forwardingH2(let forward) = state, forward.stream === stream else { return }
        forward.stream = nil
        if refused && forward.retryable && forward.attempts < 3 {
            runtime.logger.debug("HTTP/2 upstream refused a stream; sending it again", metadata: ["attempt": "\(forward.attempts)"])
            openUpstreamStream(forward, context: context)
            return
        }
        h2ForwardFailed(forward, status: 502, reason: "upstream stream failed")
    }

    private func h2ForwardFailed(_ forward: H2Forward, status: Int, reason: String) {
        guard let context else { return }
        if forward.responseHeadSent {
            log(forward.request, outcome: forward.outcome, status: forward.status, bytesIn: forward.bytesFromClient, bytesOut: forward.bytesToClient)
            reset(.internalError, context: context)
            return
        }
        answer(LocalAnswer(status: status, body: reason, keepAlive: true), request: forward.request, outcome: forward.outcome, context: context)
    }

    private func finishH2Forward(_ forward: H2Forward) {
        state = .closed
        if !forward.requestComplete {
            // Answered before the request's body ended: the upstream stream, half open on our
            // side, would hold one of the upstream's concurrent streams; the rest of the client's
            // body is taken and dropped (as after a local answer), and a client that then goes
            // silent is reset by the stream idle sweep like any other.
            forward.stream?.cancel()
            resumeClientReads()
        }
        log(forward.request, outcome: forward.outcome, status: forward.status, bytesIn: forward.bytesFromClient, bytesOut: forward.bytesToClient)
        if forward.instance.hasLogHooks { forward.instance.log(request: forward.request, status: forward.status) }
    }
}
