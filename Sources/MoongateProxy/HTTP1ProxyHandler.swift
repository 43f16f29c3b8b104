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
///
/// Nothing of a request goes upstream before every byte already read has been parsed: upstream
/// writes are flushed at the end of a read batch (or of a queue drain), so a request refused for
/// its framing later in the same batch never reaches any upstream. Every stage a client can stall
/// has a deadline (``HTTP1Deadlines``); a refused request waits for the responses ahead of it.
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
    /// A request refused (malformed, or too slow) while responses ahead of it were still due: it is
    /// answered, and the connection closed, once they are complete. Nothing more is read meanwhile.
    var deferredRefusal: ClientRequestError?
    /// The client half-closed: close once the last queued request is answered.
    var clientInputClosed = false
    /// Graceful shutdown asked this connection to close once it is idle.
    var closeWhenIdle = false
    /// Set while a final response drains before the close (see ``lingeringClose(context:)``).
    var lingering = false
    let deadlines: HTTP1Deadlines
    /// Where reading requests stands (which reading deadline runs).
    var readPhase: ClientReadPhase = .fresh
    /// The first bytes of a head came in this read: its deadline starts after the read, unless the
    /// head completed in it (most do, and then no clock is read for it).
    var headStarting = false
    /// Body bytes came in this read: the body deadline moves once, after the read.
    var bodyProgress = false
    /// A body started in this read: its total deadline is set after the read.
    var bodyStarting = false
    /// When the body being read must be complete (`timeouts.request_body` after its head).
    var bodyDeadline = NIODeadline.uptimeNanoseconds(0)
    /// A request ended in this read (see ``bytesFollowLastRequest(in:)``).
    var endedInRead = false
    /// The request read last has a Content-Length body, and where its last body bytes lay in
    /// memory (compared, never read).
    var lengthBody = false
    var lastBodyEnd: UnsafeRawPointer?
    /// Request headers and body (see ``ClientReadPhase``); created with the connection.
    var readTimer: DeadlineTimer?
    /// Keep-alive idle; created when a connection first goes idle.
    var idleTimer: DeadlineTimer?
    /// A client that stopped reading; created when a write first stalls.
    var writeTimer: DeadlineTimer?
    /// The bytes buffered toward the client when write progress was last seen.
    var writeMark = 0
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
        // The limits and deadlines of the live generation (a reload's apply from the next connection).
        _ = runtime.policy.instance(in: loop.policy)
        let settings = loop.policy.settings
        self.parser = ClientRequestParser(limits: settings.limits)
        self.deadlines = settings.http1Deadlines
    }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress {
            client = ClientInfo(ip: remote.ipAddress ?? "0.0.0.0", port: remote.port ?? 0, session: session)
        }
        if context.channel.isActive { armFreshTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armFreshTimer(context: context)
        context.fireChannelActive()
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        // Leaving for a relay: deliver the raw bytes kept so far, in order.
        rawPending.flush(context)
        context.leavePipeline(removalToken: removalToken)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
        if case .exchanging(let exchange) = state { exchange.upstream?.delegate = nil }
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
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
            case .exchanging(let exchange) where exchange.kind == .forward && !exchange.requestComplete:
                // The body can never be completed: the upstream must not wait for the rest of it
                // (nginx's 499 "client closed"). A 400 if nothing of the response is out yet.
                exchangeFailed(exchange, status: 400, reason: "the request body ended early", context: context)
            default: break
            }
            return
        }
        if event is OverloadShedEvent { return shedIfIdle(context: context) }
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
        if queued.count >= Self.queueLimit || deferredRefusal != nil {
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
        // Refused, waiting for the responses ahead: nothing more from the client is used.
        if deferredRefusal != nil { return }
        switch readPhase {
        case .fresh: readPhase = .head  // its deadline runs from the accept
        case .between:
            readPhase = .head
            headStarting = true
            idleTimer?.disarm()
        case .head, .body: break
        }
        var buffer = unwrapInboundIn(data)
        do {
            let rest = try parser.feed(&buffer) { part in self.accept(part, context: context) }
            // Bytes after a CONNECT or upgrade head: kept for the relay, unless the request was refused.
            if let rest, rest.readableBytes > 0, !isFinished { rawPending.append(NIOAny(rest)) }
        } catch {
            refuseRequest(error, context: context)
            return
        }
        if endedInRead {
            endedInRead = false
            if case .between = readPhase, bytesFollowLastRequest(in: buffer) {
                // The next request began in this read: its head's deadline starts now.
                readPhase = .head
                headStarting = true
                idleTimer?.disarm()
            }
        }
        moveReadDeadline()
    }

    /// Whether bytes of another request followed the end of the last one in this read: the parser
    /// keeps them (a head's beginning) and hands nothing back, so the end of what it consumed
    /// (`consumed`, read to its end) is compared with where that request ended — its last body
    /// bytes (a Content-Length body), or else the blank line ending its head or chunked body.
    private func bytesFollowLastRequest(in consumed: ByteBuffer) -> Bool {
        if lengthBody {
            return consumed.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress) } != lastBodyEnd
        }
        // The bytes just before the reader index were read (initialised): at most the four of
        // the blank line, which a partial head can never end with.
        let end = consumed.readerIndex
        return consumed.withVeryUnsafeBytes { bytes in
            var k = end - 1
            while k >= max(0, end - 4) {
                if bytes[k] != ((end - k) % 2 == 1 ? 10 : 13) { return true }
                k -= 1
            }
            return false
        }
    }

    /// Pipelined requests wait, in order, until the current response is complete. Reading goes
    /// on meanwhile (no read interest toggled per request) up to `queueLimit` parts.
    private func accept(_ part: ClientRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            headStarting = false
            idleTimer?.disarm()
            switch head.framing {
            case .none, .length(0):
                lengthBody = false
                readTimer?.disarm()  // its `.end` follows at once
            case .length, .chunked:
                lengthBody = head.framing != .chunked
                readPhase = .body
                bodyStarting = true
                bodyProgress = true
            }
        case .body(let bytes):
            bodyProgress = true
            if lengthBody {
                lastBodyEnd = bytes.withUnsafeReadableBytes { bytes in UnsafeRawPointer(bytes.baseAddress.map { $0 + bytes.count }) }
            }
        case .end:
            endedInRead = true
            readPhase = .between
            readTimer?.disarm()
            bodyProgress = false
            bodyStarting = false
        }
        if lingering { return }
        if !queued.isEmpty || busyWithCompleteRequest {
            queued.append(part)
            return
        }
        handle(part, context: context)
    }

    func handle(_ part: ClientRequestPart, context: ChannelHandlerContext) {
        switch (state, part) {
        case (.idle, .head(let head)):
            answeringHead = head.isHEAD
            handleHead(head, context: context)
        case (.discarding(let close), .end):
            state = .idle
            if close || closeWhenIdle { context.close(promise: nil) } else { armIdleTimer(context: context) }
        case (.discarding, _):
            break
        case (.exchanging(let exchange), .body(let buffer)):
            exchange.bytesFromClient += buffer.readableBytes
            exchange.sendBody(buffer, allocator: context.channel.allocator)
        case (.exchanging(let exchange), .end):
            exchange.requestComplete = true
            // Flushed at the end of the read batch (or queue drain), once every byte read is parsed.
            exchange.sendEnd(flush: false)
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

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .exchanging(let exchange) = state { exchange.flushUpstream() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable {
            // The client is not taking bytes as fast as they come: upstream reads wait (see
            // ``UpstreamHandler``), and the connection goes if no progress is made in time.
            watchWriteProgress(context: context)
        } else if case .exchanging(let exchange) = state {
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
        if runtime.overload.isOverloaded { return refuseForOverload(head, context: context) }
        let fields = head.fields
        headStartedAt = .now()
        if let problem = Self.framingProblem(head) {
            logRefused(status: problem.status, reason: .malformed, detail: problem.reason, method: head.method, target: head.uri)
            respondLocally(status: problem.status, reason: problem.reason, close: true, context: context)
            state = .done
            return
        }
        var request: PolicyRequest
        do {
            request = try PolicyRequest.http1(method: head.method, uri: head.uri, version: head.version, headers: fields, client: client)
        } catch {
            logRefused(status: error.status, reason: .malformed, detail: error.reason, method: head.method, target: head.uri)
            respondLocally(status: error.status, reason: error.reason, close: true, context: context)
            state = .done
            return
        }
        guard let instance = runtime.policy.instance(in: loop.policy) else {
            logRefused(status: 503, reason: .unloaded, detail: "no policy has loaded", method: head.method, target: head.uri)
            respondLocally(status: 503, reason: "no policy has loaded", close: head.isCONNECT || head.isUpgrade, context: context)
            return
        }
        if runtime.metrics.tracing.isActive { runtime.metrics.tracing.begin(&request) }
        let verdict = instance.evaluate(request)
        let outcome = verdict.outcome
        // After a CONNECT or an upgrade request the connection carries no more HTTP.
        let keepAlive = head.isKeepAlive && !head.isCONNECT && !head.isUpgrade
        let settings = loop.policy.settings
        let action = RequestPlanner.plan(
            request, verdict, keepAlive: keepAlive,
            tunnelRefusal: { runtime.tunnels.refusal(client: client.ip, limits: settings.limits) },
            cluster: { settings.clusters[$0] })
        switch action {
        case .answer(let answer):
            if let problem = answer.problem {
                runtime.logger.error("\(problem)", metadata: ["plugin": "\(outcome.plugin ?? "-")"])
            }
            finishLocally(
                request, outcome, status: answer.status, body: answer.body, extra: answer.headers, keepAlive: answer.keepAlive,
                exact: answer.exact, reason: answer.refusal(after: outcome), context: context)
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
    static func framingProblem(_ head: ClientRequestHead) -> RequestError? {
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
}
