import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1

/// The one handler of an HTTP/1.1 client connection that asks policy and acts on the answer.
///
/// It parses requests in place (``ClientRequestParser``: strict, hardening.md §A), writes responses
/// as bytes (``HTTP1Wire``), and answers pipelined requests in order. Per request head it asks this loop's
/// policy instance once, then:
/// answers locally (deny, respond, fault), forwards to an upstream (route, forward, upgrades,
/// tunnel_via), or turns the connection into a tunnel (CONNECT terminated here).
final class HTTP1ProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        /// Waiting for a request head.
        case idle
        /// Answered locally; request body parts are dropped until `.end`.
        case discarding(close: Bool)
        /// A request is being forwarded.
        case exchanging(Exchange)
        /// A CONNECT is dialling its target; bytes after the head are kept (early data).
        case connecting(TunnelAttempt)
        /// The connection has become a tunnel or is closing: HTTP is over.
        case done
    }

    let runtime: ProxyRuntime
    let loop: LoopContext
    var state: State = .idle
    var context: ChannelHandlerContext?
    var client = ClientInfo(ip: "0.0.0.0")
    var served = 0
    /// The request being answered is a HEAD: its response carries no body.
    var answeringHead = false
    var pendingRead = false
    /// Set once HTTP is over (a tunnel is being set up): inbound data is raw bytes, kept until the
    /// relay is in place and then passed on in order.
    var rawMode = false
    var rawPending = RawBytes()
    /// Pipelined request parts waiting for the current response (at most `queueLimit` are read ahead).
    var queued: [ClientRequestPart] = []
    static let queueLimit = 64
    /// The client half-closed: close once the last queued request is answered.
    var clientInputClosed = false
    /// Graceful shutdown asked this connection to close once it is idle.
    var closeWhenIdle = false
    /// Set while a final response drains before the close (see ``lingeringClose(context:)``).
    var lingering = false
    var headTimer: DeadlineTimer?
    /// A response head (and the body bytes read with it) not yet handed to the channel: written
    /// as one buffer at the end of the upstream read, so a small response is one write, not two.
    var unwrittenResponse: ByteBuffer?
    /// Created on the first forwarded request.
    var responseTimer: DeadlineTimer?
    /// When the current request's head was handed to policy (a local answer's duration counts from here).
    var headStartedAt = NIODeadline.uptimeNanoseconds(0)

    private let parser: ClientRequestParser
    /// The client's TLS session (nil: cleartext).
    private let session: TLSSessionInfo?

    init(runtime: ProxyRuntime, loop: LoopContext, session: TLSSessionInfo? = nil) {
        self.runtime = runtime
        self.loop = loop
        self.session = session
        self.parser = ClientRequestParser(limits: runtime.config.limits)
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress {
            client = ClientInfo(ip: remote.ipAddress ?? "0.0.0.0", port: remote.port ?? 0, session: session)
        }
        if context.channel.isActive { armHeadTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armHeadTimer(context: context)
        context.fireChannelActive()
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        // Leaving for a relay: deliver the raw bytes kept so far, in order.
        rawPending.flush(context)
        context.leavePipeline(removalToken: removalToken)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        headTimer?.cancel()
        responseTimer?.cancel()
        if case .exchanging(let exchange) = state { exchange.upstream?.delegate = nil }
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        headTimer?.cancel()
        responseTimer?.cancel()
        switch state {
        case .exchanging(let exchange):
            // The client went away mid-exchange: the upstream connection cannot be reused.
            exchange.upstream?.delegate = nil
            exchange.upstream?.channel?.close(promise: nil)
            logExchange(exchange, status: exchange.responseHeadSent ? exchange.status : 499)
        case .connecting(let attempt):
            attempt.abandon()
        default:
            break
        }
        state = .done
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The client half-closed. Idle: close. Mid-exchange: finish the responses first.
            clientInputClosed = true
            if lingering {
                context.close(promise: nil)
                return
            }
            switch state {
            case .idle where queued.isEmpty, .discarding: context.close(promise: nil)
            default: break
            }
            return
        }
        if event is ChannelShouldQuiesceEvent {
            // Graceful shutdown: an idle connection closes now, a busy one after its response.
            closeWhenIdle = true
            if case .idle = state, queued.isEmpty { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: - Reads (back-pressure)

    func read(context: ChannelHandlerContext) {
        if queued.count >= Self.queueLimit {
            pendingRead = true
            return
        }
        switch state {
        case .exchanging(let exchange):
            if exchange.kind != .forward && !exchange.responseHeadSent {
                // Bytes after a CONNECT or upgrade head wait for the upstream's answer.
                pendingRead = true
            } else if let upstream = exchange.upstream, upstream.channel?.isWritable ?? false {
                context.read()
            } else {
                pendingRead = true
            }
        case .connecting:
            // Keep reading while the target is dialled (toggling read interest costs two
            // epoll_ctl calls per tunnel); early bytes are kept, up to a bound, then reads wait.
            if rawPending.count >= 16 { pendingRead = true } else { context.read() }
        default:
            context.read()
        }
    }

    func resumeClientReads() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    // MARK: - Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lingering { return }
        if rawMode {
            // HTTP is over for this connection: raw bytes after the head (early data).
            rawPending.append(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        do {
            let rest = try parser.feed(&buffer) { part in self.accept(part, context: context) }
            // Bytes after a CONNECT or upgrade head: kept for the relay, unless the request was refused.
            if let rest, rest.readableBytes > 0, !isFinished { rawPending.append(NIOAny(rest)) }
        } catch {
            requestRefused(error, context: context)
        }
    }

    /// Pipelined requests wait, in order, until the current response is complete. Reading goes
    /// on meanwhile (no read interest toggled per request) up to `queueLimit` parts.
    private func accept(_ part: ClientRequestPart, context: ChannelHandlerContext) {
        if lingering { return }
        if !queued.isEmpty || busyWithCompleteRequest {
            queued.append(part)
            return
        }
        handle(part, context: context)
    }

    /// Answered and closing: nothing more from the client is used.
    private var isFinished: Bool {
        switch state {
        case .done, .discarding: return !rawMode
        default: return false
        }
    }

    /// Strict parsing: every malformed head gets an answer and a closed connection, and nothing
    /// is forwarded.
    private func requestRefused(_ error: ClientRequestError, context: ChannelHandlerContext) {
        if lingering { return }
        switch state {
        case .idle, .discarding:
            respondLocally(status: error.status, reason: "malformed request: \(error.reason)", close: true, context: context)
        case .exchanging(let exchange) where !exchange.responseHeadSent:
            exchange.upstream?.delegate = nil
            exchange.upstream?.channel?.close(promise: nil)
            respondLocally(status: error.status, reason: "malformed request: \(error.reason)", close: true, context: context)
        default:
            context.close(promise: nil)
        }
        state = .done
        queued = []
    }

    /// True while a request that has fully arrived is still being answered.
    private var busyWithCompleteRequest: Bool {
        if case .exchanging(let exchange) = state { return exchange.requestComplete }
        return false
    }

    private func handle(_ part: ClientRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            disarmHeadTimer()
            served += 1
            answeringHead = head.isHEAD
            handleHead(head, context: context)
        case (.discarding(let close), .end):
            state = .idle
            if close || closeWhenIdle { context.close(promise: nil) } else { armHeadTimer(context: context) }
        case (.discarding, _):
            break
        case (.exchanging(let exchange), .body(let buffer)):
            exchange.bytesFromClient += buffer.readableBytes
            exchange.sendBody(buffer, allocator: context.channel.allocator)
        case (.exchanging(let exchange), .end):
            exchange.requestComplete = true
            exchange.sendEnd()
            startResponseTimer(exchange, context: context)
            finishIfComplete(exchange, context: context)
        case (.connecting(let attempt), .end):
            attempt.sawEnd = true
            // Nothing after a CONNECT head is HTTP: the parser has stopped, raw bytes are kept.
            rawMode = true
            if attempt.upstream != nil { establishTunnel(attempt, context: context) }
        case (.connecting, _), (.done, _):
            break
        default:
            context.close(promise: nil)
        }
    }

    /// Hands queued pipelined requests on once the connection is free, then resumes reading.
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
        if queued.isEmpty, case .idle = state, clientInputClosed || closeWhenIdle {
            context.close(promise: nil)
            return
        }
        if queued.count < Self.queueLimit { resumeClientReads() }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .exchanging(let exchange) = state { exchange.flushUpstream() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .exchanging(let exchange) = state {
            exchange.upstream?.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if lingering { return }
        runtime.logger.debug("client connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Request heads

    private func handleHead(_ head: ClientRequestHead, context: ChannelHandlerContext) {
        let fields = head.fields
        if let problem = framingProblem(head) {
            respondLocally(status: problem.status, reason: problem.reason, close: true, context: context)
            state = .done
            return
        }
        let request: PolicyRequest
        do {
            request = try PolicyRequest.http1(method: head.method, uri: head.uri, version: head.version, headers: fields, client: client)
        } catch {
            respondLocally(status: error.status, reason: error.reason, close: true, context: context)
            state = .done
            return
        }
        headStartedAt = .now()
        guard let instance = runtime.policy.instance(in: loop.policy) else {
            respondLocally(status: 503, reason: "no policy has loaded", close: head.isCONNECT || head.isUpgrade, context: context)
            return
        }
        let verdict = instance.evaluate(request)
        let outcome = verdict.outcome
        // After a CONNECT or an upgrade request the connection carries no more HTTP.
        let keepAlive = head.isKeepAlive && !head.isCONNECT && !head.isUpgrade
        let action = RequestPlanner.plan(
            request, verdict, keepAlive: keepAlive,
            tunnelRefusal: { runtime.tunnels.refusal(client: client.ip, limits: runtime.config.limits) },
            cluster: { runtime.clusters[$0] })
        switch action {
        case .answer(let answer):
            if let problem = answer.problem {
                runtime.logger.error("\(problem)", metadata: ["plugin": "\(outcome.plugin ?? "-")"])
            }
            finishLocally(
                request, outcome, status: answer.status, body: answer.body, extra: answer.headers, keepAlive: answer.keepAlive,
                exact: answer.exact, context: context)
            if answer.endsConnection { state = .done }
        case .terminateTunnel(let target):
            startTunnel(to: target, request: request, instance: instance, outcome: outcome, context: context)
        case .exchange(let kind, let destination, let headers, let keepAlive):
            startExchange(
                kind: kind, destination: destination, request: request, instance: instance, outcome: outcome,
                headers: headers, head: head, keepAlive: keepAlive, context: context)
        }
    }

    /// Framing rules that are protocol correctness, not policy (CX-BAD-*, hardening §A).
    private func framingProblem(_ head: ClientRequestHead) -> RequestError? {
        var hosts = 0
        for field in head.fields where field.name.utf8.count == 4 && field.hasName("host") { hosts += 1 }
        if hosts > 1 {
            return RequestError(status: 400, reason: "more than one Host header")
        }
        if head.isCONNECT {
            switch head.framing {
            case .chunked: return RequestError(status: 400, reason: "CONNECT cannot carry Transfer-Encoding")
            case .length(let n) where n != 0: return RequestError(status: 400, reason: "CONNECT cannot carry a body")
            default: break
            }
        }
        return nil
    }

    // MARK: - Local responses

    func finishLocally(
        _ request: PolicyRequest, _ outcome: PolicyOutcome, status: Int, body: String?, extra: [HeaderField],
        keepAlive: Bool, exact: Bool = false, context: ChannelHandlerContext
    ) {
        let close = !keepAlive || request.isConnect
        respondLocally(status: status, reason: body, extra: extra, close: close, exact: exact, context: context)
        runtime.metrics.request(decision: outcome.decision.verb, status: status)
        accessLog(
            method: request.method, target: request.target?.description ?? request.authority ?? "-",
            decision: outcome.decision.summary, plugin: outcome.plugin, status: status, bytesIn: 0,
            bytesOut: body?.utf8.count ?? 0, since: headStartedAt)
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
