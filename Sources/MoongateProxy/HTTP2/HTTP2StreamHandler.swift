import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP2

/// One HTTP/2 stream of a client connection: the HTTP/2 codec in front of the protocol-neutral core.
/// A plain object, not a channel handler: its connection (``HTTP2ConnectionHandler``) hands it the
/// stream's frames and tells it when the stream closes; it writes through its ``HTTP2StreamContext``.
///
/// A HEADERS frame is checked (``HTTP2RequestValidator``) and becomes a ``PolicyRequest``; policy is
/// asked once on the connection's event loop, and the ``RequestPlanner``'s action is carried out on
/// this stream: a local answer, an exchange with an HTTP/1.1 upstream (+H1Upstream) or a stream of
/// an HTTP/2 one (+H2Upstream), a CONNECT terminated here (+Tunnel), or a WebSocket or CONNECT
/// translated for an HTTP/1.1 origin or parent (+Translation). The stream idle timer (+Idle) and
/// request trailers (+Trailers) have files of their own. A failure touches this stream only.
final class HTTP2StreamHandler: UpstreamDelegate {
    enum State {
        /// Waiting for the request's HEADERS.
        case awaitingHead
        /// Answered locally; what the client still sends is dropped.
        case answered
        /// Forwarded to an upstream; `headSent` once the response's HEADERS went out.
        case exchanging(Exchange, headSent: Bool)
        /// A CONNECT whose target is being dialled; DATA is kept until the tunnel is up.
        case dialling(TunnelDial)
        /// A tunnel: this stream and a TCP connection relay bytes.
        case relaying(StreamTunnel)
        /// Forwarded as a stream of an HTTP/2 upstream connection.
        case forwardingH2(H2Forward)
        /// A request with `content-length: 0` whose stream is still open: it is sent once END_STREAM
        /// comes (DATA would make it malformed, and the upstream must not have it complete by then).
        case waitingForEnd(() -> Void)
        case closed
    }

    /// What a CONNECT keeps while its target is dialled.
    final class TunnelDial {
        let request: PolicyRequest
        let outcome: PolicyOutcome
        let instance: PolicyInstance
        var early: [ByteBuffer] = []
        var clientEnded = false
        init(request: PolicyRequest, outcome: PolicyOutcome, instance: PolicyInstance) {
            self.request = request
            self.outcome = outcome
            self.instance = instance
        }
    }

    let runtime: ProxyRuntime
    let loop: LoopContext
    let client: ClientInfo
    /// The connection's own flood counters (WINDOW_UPDATE credit).
    let guardian: HTTP2FloodGuard
    /// This loop's HTTP/2 upstream connections.
    let upstreams: HTTP2UpstreamPool
    /// `timeouts.stream_idle`: a stream with no frame either way for this long is reset.
    let idleTimeout: TimeAmount
    /// The connection advertised SETTINGS_ENABLE_CONNECT_PROTOCOL (`http2.extended_connect`).
    let extendedConnect: Bool
    var state = State.awaitingHead
    /// The stream's handle on its connection; nil once the stream has closed.
    var context: HTTP2StreamContext?
    /// The stream had frames in the connection's current read batch.
    var inReadBatch = false
    var startedAt: NIODeadline
    /// When the last frame went either way (read by the idle timer).
    var lastActivity: NIODeadline
    /// The connection's timer, which checks the stream idle and response deadlines.
    let clock: HTTP2StreamClock
    /// This stream's place in `clock`.
    var clockSlot: Int?
    /// `timeouts.upstream_response` of the stream's exchange with an HTTP/1.1 upstream.
    var responseDeadline: NIODeadline?
    /// The request's `content-length`, which the DATA received must match (RFC 9113 §8.1.1).
    var declaredLength: Int?
    var receivedLength = 0
    /// The request bytes that complete its `content-length`, held until END_STREAM shows that no
    /// more DATA follows (more would make the request malformed after the upstream had it whole).
    var requestTail: ByteBuffer?
    /// The last body chunk of an upstream response, held until the next part shows whether it ends
    /// the response (then it carries END_STREAM and no empty DATA frame follows) or the read ends.
    var heldData: ByteBuffer?
    private var pendingRead = false

    init(
        runtime: ProxyRuntime, loop: LoopContext, client: ClientInfo, guardian: HTTP2FloodGuard, upstreams: HTTP2UpstreamPool,
        idleTimeout: TimeAmount, extendedConnect: Bool, clock: HTTP2StreamClock
    ) {
        self.extendedConnect = extendedConnect
        self.clock = clock
        self.upstreams = upstreams
        self.runtime = runtime
        self.loop = loop
        self.client = client
        self.guardian = guardian
        self.idleTimeout = idleTimeout
        let now = NIODeadline.now()
        startedAt = now
        lastActivity = now
    }

    /// The stream opened.
    func attach(_ context: HTTP2StreamContext) {
        self.context = context
        clock.add(self)
    }

    /// The stream closed (both END_STREAMs, a reset either way, or the connection went): what it
    /// still holds upstream is let go.
    func closed() {
        clock.remove(self)
        abort()
        context?.closed()
        context = nil
    }

    // MARK: - Inbound frames

    /// A frame of this stream from the client.
    func received(_ payload: HTTP2Frame.FramePayload) {
        guard let context else { return }
        let now = NIODeadline.now()
        lastActivity = now
        switch payload {
        case .headers(let headers):
            if case .awaitingHead = state {
                startedAt = now
                handleHead(headers.headers, endStream: headers.endStream, context: context)
            } else {
                clientTrailers(headers.headers, context: context)
            }
        case .data(let frame):
            guard case .byteBuffer(let bytes) = frame.data else { return }
            receivedLength += bytes.readableBytes
            if let declaredLength, receivedLength > declaredLength || (frame.endStream && receivedLength != declaredLength) {
                malformed("DATA does not match content-length", context: context)
                return
            }
            if receivedLength == declaredLength, !frame.endStream, bytes.readableBytes > 0 {
                requestTail = bytes
                return
            }
            releaseRequestTail(context: context)
            clientData(bytes, context: context)
            if frame.endStream { clientEnded(context: context) }
            holdCreditWhileBlocked()
        case .rstStream:
            abort()
        case .windowUpdate:
            guardian.windowUpdateReceived()
        default:
            break
        }
    }

    private func clientData(_ bytes: ByteBuffer, context: HTTP2StreamContext) {
        switch state {
        case .exchanging(let exchange, _):
            exchange.bytesFromClient += bytes.readableBytes
            exchange.sendBody(bytes, allocator: context.allocator)
        case .dialling(let dial):
            dial.early.append(bytes)
        case .relaying(let tunnel):
            tunnel.toTarget(bytes)
        case .forwardingH2(let forward):
            forwardBody(bytes, forward)
        default:
            break
        }
    }

    /// The held bytes that complete the request's length go on (END_STREAM or trailers came).
    func releaseRequestTail(context: HTTP2StreamContext) {
        guard let tail = requestTail else { return }
        requestTail = nil
        clientData(tail, context: context)
    }

    func clientEnded(context: HTTP2StreamContext) {
        releaseRequestTail(context: context)
        switch state {
        case .waitingForEnd(let start):
            start()
        case .exchanging(let exchange, _):
            guard !exchange.requestComplete else { return }
            exchange.requestComplete = true
            exchange.sendEnd()
            finishIfComplete(exchange)
        case .dialling(let dial):
            dial.clientEnded = true
        case .relaying(let tunnel):
            tunnel.clientEnded()
        case .forwardingH2(let forward):
            forwardEnd(forward)
        default:
            break
        }
    }

    /// The connection's read batch ended: what it brought goes upstream in one write.
    func readComplete() {
        switch state {
        case .exchanging(let exchange, _): exchange.flushUpstream()
        case .relaying(let tunnel): tunnel.flushTarget()
        case .forwardingH2(let forward): forward.stream?.flush()
        default: break
        }
    }

    // MARK: - Back-pressure

    /// While the other side cannot take more, the client gets no more credit for this stream (it
    /// stops at the stream's window).
    private func holdCreditWhileBlocked() {
        guard let context, !pendingRead else { return }
        let otherSideWritable: Bool
        switch state {
        case .exchanging(let exchange, _): otherSideWritable = exchange.upstream?.channel?.isWritable ?? true
        case .relaying(let tunnel): otherSideWritable = tunnel.targetIsWritable
        case .forwardingH2(let forward): otherSideWritable = forward.stream?.isWritable ?? true
        default: otherSideWritable = true
        }
        guard !otherSideWritable else { return }
        pendingRead = true
        context.pause()
    }

    /// The other side can take more: resume reading the client.
    func resumeClientReads() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    /// The stream can take more DATA: the reads of the upstream or tunnel target go on.
    func writabilityChanged() {
        guard let context else { return }
        if context.isWritable {
            switch state {
            case .exchanging(let exchange, _): exchange.upstream?.resumeReading()
            case .relaying(let tunnel): tunnel.resumeTargetReads()
            case .forwardingH2(let forward): forward.stream?.resumeReading()
            default: break
            }
        }
    }

    // MARK: - Request heads

    private func handleHead(_ fields: HPACKHeaders, endStream: Bool, context: HTTP2StreamContext) {
        let head: HTTP2RequestValidator.Head
        do throws(HTTP2RequestValidator.Malformed) {
            head = try HTTP2RequestValidator.validate(fields, extendedConnect: extendedConnect)
        } catch {
            malformed(error.reason, context: context)
            return
        }
        declaredLength = head.contentLength
        if endStream, let length = head.contentLength, length != 0 {
            malformed("no DATA for a content-length", context: context)
            return
        }
        var request: PolicyRequest
        do throws(RequestError) {
            request = try PolicyRequest.http2(
                method: head.method, scheme: head.scheme, authority: head.authority, path: head.path,
                protocolName: head.protocolName, headers: head.fields, client: client)
        } catch {
            // A malformed request is a stream error (RFC 9113 §8.1.1), never a tunnel (CX-BAD-6).
            runtime.logger.debug("malformed HTTP/2 request", metadata: ["reason": "\(error.reason)"])
            runtime.requestRefused(
                status: error.status, reason: .malformed, detail: error.reason, client: client, method: head.method, target: head.authority,
                since: startedAt)
            reset(.protocolError, context: context)
            return
        }
        if runtime.overload.isOverloaded {
            return answer(runtime.overload.refusal(), request: request, outcome: nil, context: context)
        }
        guard let instance = runtime.policy.instance(in: loop.policy) else {
            answer(LocalAnswer(status: 503, body: "no policy has loaded", keepAlive: true), request: request, outcome: nil, context: context)
            return
        }
        if runtime.metrics.tracing.isActive { runtime.metrics.tracing.begin(&request) }
        let verdict = instance.evaluate(request)
        let settings = loop.policy.settings
        let action = RequestPlanner.plan(
            request, verdict, keepAlive: true,
            tunnelRefusal: { runtime.tunnels.refusal(client: client.ip, limits: settings.limits) },
            cluster: { settings.clusters[$0] })
        switch action {
        case .answer(let local):
            if let problem = local.problem {
                runtime.logger.error("\(problem)", metadata: ["plugin": "\(verdict.outcome.plugin ?? "-")"])
            }
            answer(local, request: request, outcome: verdict.outcome, context: context)
        case .terminateTunnel(let target):
            startTunnel(to: target, request: request, instance: instance, outcome: verdict.outcome, endStream: endStream, context: context)
        case .exchange(.forward, let destination, let upstreamHeaders, _) where !endStream && head.contentLength == 0:
            // Complete as declared, yet the stream is open: sent once END_STREAM shows no DATA follows.
            state = .waitingForEnd { [unowned self] in
                guard let context = self.context else { return }
                self.startExchange(
                    to: destination, request: request, instance: instance, outcome: verdict.outcome, headers: upstreamHeaders,
                    endStream: true, context: context)
            }
        case .exchange(.forward, let destination, let upstreamHeaders, _):
            startExchange(
                to: destination, request: request, instance: instance, outcome: verdict.outcome, headers: upstreamHeaders,
                endStream: endStream, context: context)
        case .exchange(.upgrade, let destination, let upstreamHeaders, _):
            startUpgrade(
                request.upgrade ?? "websocket", to: destination, request: request, instance: instance, outcome: verdict.outcome,
                headers: upstreamHeaders, endStream: endStream, context: context)
        case .exchange(.connectVia, let destination, let upstreamHeaders, _):
            let head = Self.connectViaHead(request, headers: upstreamHeaders, allocator: context.allocator)
            startExchange(
                to: destination, request: request, instance: instance, outcome: verdict.outcome, headers: upstreamHeaders,
                endStream: endStream, kind: .connectVia, head: (head, .length), context: context)
        }
    }

    // MARK: - Local answers

    func answer(_ local: LocalAnswer, request: PolicyRequest, outcome: PolicyOutcome?, context: HTTP2StreamContext) {
        state = .answered
        let body = local.exact ? (local.body ?? "") : (local.body.map { $0 + "\n" } ?? "")
        var headers = HPACKHeaders.response(status: local.status, room: local.headers.count + 2)
        var typed = false
        for field in local.headers where !HTTP1Wire.isContentLength(field.name) && !SanitizationFloor.isHopByHop(field.name) {
            typed = typed || field.hasName("content-type")
            headers.add(name: field.name.lowercased(), value: field.value)
        }
        if !typed { headers.add(name: "content-type", value: "text/plain; charset=utf-8") }
        headers.add(name: "content-length", value: String(body.utf8.count))
        let withBody = request.method != "HEAD" && !body.isEmpty
        context.write(.headers(.init(headers: headers, endStream: !withBody)))
        lastActivity = .now()
        if withBody {
            guardian.sentData()
            let buffer = context.allocator.buffer(string: body)
            context.write(.data(.init(data: .byteBuffer(buffer), endStream: true)))
        }
        // The rest of a request body, if the client goes on sending it, is taken and dropped: an
        // upload held back while the upstream could not take more gets its credit again, rather
        // than waiting for `stream_idle`. (No RST_STREAM NO_ERROR, which RFC 9113 §8.1 allows:
        // curl 7.88 then fails the whole transfer, response included, with its error 92.)
        resumeClientReads()
        context.flush()
        log(request, outcome: outcome, status: local.status, bytesIn: 0, bytesOut: withBody ? body.utf8.count : 0, local: true)
    }

    /// A malformed request (RFC 9113 §8.1.1): a stream error; an exchange under way is abandoned,
    /// so its upstream sees a truncated request, never a complete one.
    func malformed(_ reason: String, context: HTTP2StreamContext) {
        runtime.logger.debug("malformed HTTP/2 request", metadata: ["reason": "\(reason)"])
        runtime.requestRefused(
            status: 400, reason: .malformed, detail: reason, client: client, method: nil, target: nil, since: startedAt)
        abort()
        reset(.protocolError, context: context)
    }

    func reset(_ code: HTTP2ErrorCode, context: HTTP2StreamContext) {
        state = .closed
        context.writeAndFlush(.rstStream(code))
    }

    func log(_ request: PolicyRequest, outcome: PolicyOutcome?, status: Int, bytesIn: Int, bytesOut: Int, local: Bool = false) {
        runtime.requestEnded(
            request, outcome: outcome, status: status, reason: outcome == nil ? .unloaded : nil, local: local, client: client,
            bytesIn: bytesIn, bytesOut: bytesOut, since: startedAt)
    }

    func abort() {
        switch state {
        case .exchanging(let exchange, _):
            exchange.upstream?.delegate = nil
            exchange.upstream?.close()
        case .relaying(let tunnel):
            tunnel.target?.close(promise: nil)
        case .forwardingH2(let forward):
            forward.stream?.cancel()
        default:
            break
        }
        state = .closed
    }
}
