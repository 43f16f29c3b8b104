import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1
import NIOPosix

/// A CONNECT being terminated here: the target is being dialled.
final class TunnelAttempt {
    let request: PolicyRequest
    let instance: PolicyInstance
    let outcome: PolicyOutcome
    let target: Authority
    let startedAt = NIODeadline.now()
    var sawEnd = false
    var upstream: (any Channel)?
    /// The relay's two ends, made before the dial: the target's end goes in with the connection
    /// and holds its reads (a server that speaks first waits in the kernel) until its partner is in.
    let clientGlue: GlueHandler
    let upstreamGlue: GlueHandler

    init(request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome, target: Authority) {
        self.request = request
        self.instance = instance
        self.outcome = outcome
        self.target = target
        (clientGlue, upstreamGlue) = GlueHandler.matchedPair()
    }

    /// The client left before the tunnel was up.
    func abandon() {
        upstream?.close(promise: nil)
        upstream = nil
    }
}

extension HTTP1ProxyHandler {
    /// CONNECT, terminated here: dial the target (with the address floor), then answer 200 as
    /// soon as TCP connects and relay bytes. A refused or timed-out target gets a 503, never a 200.
    func startTunnel(to target: Authority, request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome, context: ChannelHandlerContext) {
        let attempt = TunnelAttempt(request: request, instance: instance, outcome: outcome, target: target)
        state = .connecting(attempt)
        let dialled = outcome.tunnelTLS.map { tls in
            TunnelTLS.dial(target, tls: tls, then: attempt.upstreamGlue, runtime: runtime, loop: loop, on: context.eventLoop)
        } ?? UpstreamDialer.dialTarget(target, with: attempt.upstreamGlue, runtime: runtime, loop: loop, on: context.eventLoop)
        dialled
            .assumeIsolated()
            .whenComplete { result in
                guard case .connecting(let current) = self.state, current === attempt else {
                    if case .success(let channel) = result { channel.close(promise: nil) }
                    return
                }
                switch result {
                case .success(let channel):
                    attempt.upstream = channel
                    if attempt.sawEnd, let context = self.context { self.establishTunnel(attempt, context: context) }
                case .failure(let error):
                    guard let context = self.context else { return }
                    let (status, reason) = UpstreamDialer.failure(error)
                    self.runtime.logger.info("tunnel target unreachable", metadata: ["target": "\(target)", "error": "\(error)"])
                    self.rawPending.discard()
                    self.respondLocally(status: status, reason: reason, close: true, context: context)
                    self.state = .done
                    self.logLocal(
                        request, outcome, status: status, bytesOut: localBodyLength(reason, exact: false), detail: reason,
                        since: attempt.startedAt)
                }
            }
    }

    /// The target is connected and the CONNECT head is complete: 200, then the relay.
    func establishTunnel(_ attempt: TunnelAttempt, context: ChannelHandlerContext) {
        guard let upstream = attempt.upstream else { return }
        guard upstream.isActive else {
            // The target hung up before the tunnel was up: never a 200.
            rawPending.discard()
            respondLocally(status: 503, reason: "tunnel target closed", close: true, context: context)
            state = .done
            return
        }
        state = .done
        // A 2xx to CONNECT has no Content-Length and no Transfer-Encoding (RFC 9110 §9.3.6).
        var head = context.channel.allocator.buffer(capacity: 40)
        head.writeStaticString("HTTP/1.1 200 Connection established\r\n\r\n")
        runtime.tunnels.openUntilClosed(context.channel, client: client.ip)
        context.writeAndFlush(wrapOutboundOut(head), promise: nil)
        glue(context: context, upstream: upstream, request: attempt.request, instance: attempt.instance,
             outcome: attempt.outcome, status: 200, startedAt: attempt.startedAt,
             pair: (attempt.clientGlue, attempt.upstreamGlue), upstreamKeeper: nil)
    }

    /// An upgrade the origin accepted (101): relay the 101, then bytes both ways.
    func upgradeAccepted(_ exchange: Exchange, head: UpstreamResponseHead, context: ChannelHandlerContext) {
        guard let upstream = exchange.upstream, let upstreamChannel = upstream.channel else { return }
        var headers = head.fields
        if let fault = exchange.instance.sanitizeResponse(
            for: exchange.request, status: 101, headers: &headers, keeping: ["connection", "upgrade"])
        {
            runtime.logger.error("sanitize_response failed", metadata: ["error": "\(fault)"])
            exchangeFailed(exchange, status: 500, reason: "policy error", context: context)
            return
        }
        var out = context.channel.allocator.buffer(capacity: 256)
        HTTP1Wire.writeStatusLine(.switchingProtocols, into: &out)
        for field in headers { HTTP1Wire.writeField(field.name, field.value, into: &out) }
        out.writeStaticString("\r\n")
        state = .done
        upstream.delegate = nil
        upstream.rawMode = true
        rawMode = true
        runtime.tunnels.openUntilClosed(context.channel, client: client.ip)
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        glueOnNextTick(context: context, upstream: upstreamChannel, exchange: exchange, status: 101, upstreamHandler: upstream)
    }

    /// A parent proxy accepted a CONNECT (any 2xx): relay its status line, then bytes both ways.
    /// Content-Length or Transfer-Encoding on that 2xx are ignored: what follows the head is tunnel data.
    func connectViaAccepted(_ exchange: Exchange, head: UpstreamResponseHead, context: ChannelHandlerContext) {
        guard let upstream = exchange.upstream, let upstreamChannel = upstream.channel else { return }
        state = .done
        upstream.delegate = nil
        upstream.rawMode = true
        rawMode = true
        if let tls = exchange.outcome.tunnelTLS, let target = exchange.request.target {
            // TLS toward the target inside the parent's tunnel: the client hears 200 only once it has verified.
            context.eventLoop.assumeIsolated().execute {
                self.startTLSInsideParentTunnel(exchange, tls: tls, target: target, upstream: upstreamChannel, keeper: upstream)
            }
            return
        }
        var line = context.channel.allocator.buffer(capacity: 64)
        HTTP1Wire.writeStatusLine(head.status, into: &line)
        line.writeStaticString("\r\n")
        runtime.tunnels.openUntilClosed(context.channel, client: client.ip)
        context.writeAndFlush(wrapOutboundOut(line), promise: nil)
        glueOnNextTick(context: context, upstream: upstreamChannel, exchange: exchange, status: head.code, upstreamHandler: upstream)
    }

    /// Runs on the tick after the parent's 2xx (the upstream handler has left its parse loop): TLS
    /// goes in behind the upstream handler, which then leaves and hands it any bytes it kept.
    private func startTLSInsideParentTunnel(
        _ exchange: Exchange, tls: TunnelTLSRequest, target: Authority, upstream: any Channel, keeper: UpstreamHandler
    ) {
        guard let context, context.channel.isActive, upstream.isActive else {
            context?.close(promise: nil)
            upstream.close(promise: nil)
            return
        }
        let handshake = TunnelTLS.start(on: upstream, tls: tls, target: target, runtime: runtime)
        upstream.pipeline.syncOperations.removeHandler(keeper, promise: nil)
        handshake.assumeIsolated().whenComplete { result in
            guard let context = self.context else {
                upstream.close(promise: nil)
                return
            }
            let pair = GlueHandler.matchedPair(secondOnSocket: GlueHandler.isSocket(upstream: upstream))
            switch result {
            case .success where (try? upstream.pipeline.syncOperations.addHandler(pair.1)) != nil:
                var head = context.channel.allocator.buffer(capacity: 40)
                head.writeStaticString("HTTP/1.1 200 Connection established\r\n\r\n")
                self.runtime.tunnels.openUntilClosed(context.channel, client: self.client.ip)
                context.writeAndFlush(self.wrapOutboundOut(head), promise: nil)
                self.glue(context: context, upstream: upstream, request: exchange.request, instance: exchange.instance,
                          outcome: exchange.outcome, status: 200, startedAt: exchange.startedAt, pair: pair, upstreamKeeper: nil)
            default:
                upstream.close(promise: nil)
                var error: any Error = ChannelError.ioOnClosedChannel
                if case .failure(let failure) = result { error = failure }
                let (status, reason) = UpstreamDialer.failure(TunnelTLS.tunnelError(error))
                self.rawPending.discard()
                self.respondLocally(status: status, reason: reason, close: true, context: context)
                self.logLocal(
                    exchange.request, exchange.outcome, status: status, bytesOut: localBodyLength(reason, exact: false),
                    detail: reason, since: exchange.startedAt)
            }
        }
    }

    /// The upstream handler is still inside its parse loop (this runs from its `.end`), so
    /// its removal completes only when that loop unwinds: the relay goes in on the next tick, and
    /// until then both sides keep raw bytes.
    private func glueOnNextTick(
        context: ChannelHandlerContext, upstream: any Channel, exchange: Exchange, status: Int, upstreamHandler: UpstreamHandler
    ) {
        context.eventLoop.assumeIsolated().execute {
            guard context.channel.isActive, upstream.isActive else {
                self.runtime.tunnels.closed(context.channel, client: self.client.ip)
                context.close(promise: nil)
                upstream.close(promise: nil)
                return
            }
            self.glue(context: context, upstream: upstream, request: exchange.request, instance: exchange.instance,
                      outcome: exchange.outcome, status: status, startedAt: exchange.startedAt,
                      pair: GlueHandler.matchedPair(secondOnSocket: GlueHandler.isSocket(upstream: upstream)), upstreamKeeper: upstreamHandler)
        }
    }

    /// Replaces HTTP on both channels with a byte relay, with the tunnel timers, then leaves. The
    /// tunnel was counted (``TunnelRegistry/opened(_:client:)``) before its status line went out.
    /// `upstreamKeeper` is the handler that kept the upstream's bytes (an upgrade or a forwarded
    /// CONNECT); without one, the upstream's end of the relay is already in place (a terminated CONNECT).
    private func glue(
        context: ChannelHandlerContext, upstream: any Channel, request: PolicyRequest, instance: PolicyInstance,
        outcome: PolicyOutcome, status: Int, startedAt: NIODeadline, pair: (GlueHandler, GlueHandler),
        upstreamKeeper: (any RemovableChannelHandler)?
    ) {
        let (clientGlue, upstreamGlue) = pair
        do {
            try context.pipeline.syncOperations.addHandler(clientGlue)
            if upstreamKeeper != nil { try upstream.pipeline.syncOperations.addHandler(upstreamGlue) }
        } catch {
            runtime.tunnels.closed(context.channel, client: client.ip)
            context.close(promise: nil)
            upstream.close(promise: nil)
            return
        }
        let clientChannel = context.channel
        runtime.watchTunnel(
            clientSide: TunnelClientSide(clientChannel), target: upstream, sweep: clientGlue, loop: loop,
            record: TunnelRecord(request: request, outcome: outcome, instance: instance), status: status, client: client,
            since: startedAt
        ) { (clientGlue.bytesRead, upstreamGlue.bytesRead) }
        // The handler that kept the upstream's bytes leaves, handing them to the relay; or the
        // upstream's end, in place since the dial, starts reading now that its partner is in.
        if let upstreamKeeper {
            upstream.pipeline.syncOperations.removeHandler(upstreamKeeper, promise: nil)
        } else {
            upstreamGlue.partnerIsReady()
        }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
        // Reads held while the tunnel was set up resume through the relay's gate.
        pendingRead = false
        clientChannel.read()
    }
}
