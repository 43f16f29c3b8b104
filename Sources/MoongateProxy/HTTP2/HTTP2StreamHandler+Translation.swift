import Logging
import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP2

/// HTTP/2 streams translated for HTTP/1.1 upstreams, then relayed as bytes:
///
/// - WebSocket (RFC 8441; CX-XLATE-5, CX-EXT-2..4): the extended CONNECT becomes `GET path` with
///   `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Version: 13` and a
///   `Sec-WebSocket-Key` (the client's, or one made here: an RFC 8441 client sends none, and strict
///   origins refuse a handshake without it, Envoy's issue 8547); the origin's `101` becomes a `200`.
///   Any other `:protocol` the policy enabled becomes `Upgrade: <protocol>` the same way.
/// - CONNECT to a parent proxy (`tunnel_via`; CX-XLATE-1, 3, 4): `CONNECT host:port HTTP/1.1`, and
///   the parent's 2xx (its framing fields ignored) is the stream's answer.
///
/// Then the stream and the upstream connection relay bytes both ways through a ``StreamTunnel``
/// (END_STREAM ↔ FIN). Any other answer is an ordinary response.
extension HTTP2StreamHandler {
    /// The HTTP/1.1 handshake for an extended CONNECT stream whose `:protocol` is `upgrade`
    /// (lower-cased): `GET path` with `Upgrade: <protocol>`; for `websocket` also the version and a
    /// key (the client's or a fresh one).
    static func upgradeHead(
        _ request: PolicyRequest, upgrade: String, headers: [HeaderField], allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var out = allocator.buffer(capacity: 320)
        HTTP1Wire.writeRequestStart(method: "GET", request: request, into: &out)
        out.writeStaticString("connection: Upgrade\r\n")
        HTTP1Wire.writeField("upgrade", upgrade, into: &out)
        let webSocket = upgrade == "websocket"
        var key: String?
        var version: String?
        for field in headers {
            switch field.name.utf8.count {
            case 4 where field.hasName("host"), 10 where field.hasName("connection"), 7 where field.hasName("upgrade"),
                14 where field.hasName("content-length"), 2 where field.hasName("te"):
                continue
            case 17 where webSocket && field.hasName("sec-websocket-key"):
                key = field.value
            case 21 where webSocket && field.hasName("sec-websocket-version"):
                version = field.value
            default:
                HTTP1Wire.writeField(field.name, field.value, into: &out)
            }
        }
        if webSocket {
            HTTP1Wire.writeField("sec-websocket-key", key ?? makeWebSocketKey(), into: &out)
            HTTP1Wire.writeField("sec-websocket-version", version ?? "13", into: &out)
        }
        out.writeStaticString("\r\n")
        return out
    }

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
    static func makeWebSocketKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return base64(bytes)
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let remaining = bytes.count - index
            let b0 = bytes[index], b1 = remaining > 1 ? bytes[index + 1] : 0, b2 = remaining > 2 ? bytes[index + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(remaining > 1 ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(remaining > 2 ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The CONNECT sent on to an HTTP/1.1 parent proxy for an HTTP/2 CONNECT stream (CX-XLATE-1,
    /// CX-XLATE-3): `CONNECT host:port HTTP/1.1` with `Host: host:port` and policy's fields; bytes
    /// the client sends before the answer follow the head (CX-ED-2).
    static func connectViaHead(_ request: PolicyRequest, headers: [HeaderField], allocator: ByteBufferAllocator) -> ByteBuffer {
        let target = request.target?.description ?? request.authority ?? ""
        var out = allocator.buffer(capacity: 128)
        out.writeStaticString("CONNECT ")
        out.writeString(target)
        out.writeStaticString(" HTTP/1.1\r\n")
        HTTP1Wire.writeField("host", target, into: &out)
        for field in headers {
            switch field.name.lowercased() {
            case "host", "content-length", "transfer-encoding", "te", "connection", "upgrade", "keep-alive": continue
            default: HTTP1Wire.writeField(field.name, field.value, into: &out)
            }
        }
        out.writeStaticString("\r\n")
        return out
    }

    /// The origin switched protocols (its 101 and the end of that message are in), or a parent proxy
    /// accepted a CONNECT (any 2xx, its framing fields ignored: what follows is tunnel data): `200`
    /// (the parent's 2xx) on the stream, then the relay, installed on the next tick (the upstream
    /// handler is still in its parse loop; until it leaves, it keeps what comes after the head).
    func tunnelAccepted(_ exchange: Exchange, head: UpstreamResponseHead, context: HTTP2StreamContext) {
        guard let upstream = exchange.upstream, let upstreamChannel = upstream.channel else { return }
        if exchange.kind == .connectVia {
            upstream.delegate = nil
            upstream.rawMode = true
            if let tls = exchange.outcome.tunnelTLS, let target = exchange.request.target {
                // TLS toward the target inside the parent's tunnel: the stream hears 200 only once it has verified.
                context.eventLoop.assumeIsolated().execute {
                    self.startTLSInsideParentTunnel(exchange, tls: tls, target: target, upstream: upstreamChannel, keeper: upstream)
                }
                return
            }
            relay(exchange, over: upstream, channel: upstreamChannel, headers: HPACKHeaders([(":status", String(head.code))]),
                  context: context)
            return
        }
        var fields = head.fields
        if let fault = exchange.instance.sanitizeResponse(for: exchange.request, status: 200, headers: &fields) {
            runtime.logger.debug("sanitize_response failed", metadata: ["plugin": "\(fault.plugin)"])
            upstream.delegate = nil
            upstream.close()
            answer(LocalAnswer(status: 500, body: "policy error", keepAlive: true), request: exchange.request,
                   outcome: exchange.outcome, context: context)
            return
        }
        var headers = HPACKHeaders([(":status", "200")])
        for field in fields {
            switch field.name.lowercased() {
            case "connection", "upgrade", "sec-websocket-accept", "transfer-encoding", "content-length", "keep-alive":
                continue
            case let name:
                headers.add(name: name, value: field.value)
            }
        }
        upstream.delegate = nil
        upstream.rawMode = true
        relay(exchange, over: upstream, channel: upstreamChannel, headers: headers, context: context)
    }

    /// Runs on the tick after the parent's 2xx (the upstream handler has left its parse loop): TLS
    /// goes in behind the upstream handler, which then leaves and hands it any bytes it kept; the
    /// relay starts once the handshake has verified, else the stream gets the 503.
    private func startTLSInsideParentTunnel(
        _ exchange: Exchange, tls: TunnelTLSRequest, target: Authority, upstream upstreamChannel: any Channel, keeper: UpstreamHandler
    ) {
        guard case .exchanging(let current, _) = state, current === exchange, context != nil, upstreamChannel.isActive else {
            upstreamChannel.close(promise: nil)
            return
        }
        let handshake = TunnelTLS.start(on: upstreamChannel, tls: tls, target: target, runtime: runtime)
        upstreamChannel.pipeline.syncOperations.removeHandler(keeper, promise: nil)
        handshake.assumeIsolated().whenComplete { result in
            guard case .exchanging(let current, _) = self.state, current === exchange, let context = self.context else {
                upstreamChannel.close(promise: nil)
                return
            }
            switch result {
            case .success:
                self.relay(exchange, over: nil, channel: upstreamChannel, headers: HPACKHeaders([(":status", "200")]), context: context)
            case .failure(let error):
                upstreamChannel.close(promise: nil)
                let (status, reason) = UpstreamDialer.failure(TunnelTLS.tunnelError(error))
                self.runtime.logger.info("TLS to the tunnel target failed", metadata: ["target": "\(target)", "error": "\(error)"])
                self.answer(
                    LocalAnswer(status: status, body: reason, keepAlive: true), request: exchange.request, outcome: exchange.outcome,
                    context: context)
            }
        }
    }

    /// `upstream`: the HTTP/1.1 handler still on the connection (it leaves once the relay is in).
    private func relay(
        _ exchange: Exchange, over upstream: UpstreamHandler?, channel upstreamChannel: any Channel, headers: HPACKHeaders,
        context: HTTP2StreamContext
    ) {
        let tunnel = StreamTunnel(stream: self, targetOnSocket: GlueHandler.isSocket(upstream: upstreamChannel))
        tunnel.target = upstreamChannel
        state = .relaying(tunnel)
        lastActivity = .now()
        runtime.tunnels.openUntilClosed(context.tunnelSide, client: client.ip)
        context.writeAndFlush(.headers(.init(headers: headers)))
        let clientEnded = exchange.requestComplete
        let handler = self
        context.eventLoop.assumeIsolated().execute {
            guard case .relaying(let current) = handler.state, current === tunnel, upstreamChannel.isActive else {
                upstreamChannel.close(promise: nil)
                return
            }
            do {
                try upstreamChannel.pipeline.syncOperations.addHandler(tunnel.socketEnd)
            } catch {
                upstreamChannel.close(promise: nil)
                handler.reset(.connectError, context: context)
                return
            }
            if let upstream { upstreamChannel.pipeline.syncOperations.removeHandler(upstream, promise: nil) }
            if clientEnded { tunnel.clientEnded() }
            handler.trackTunnel(
                tunnel, target: upstreamChannel, request: exchange.request, outcome: exchange.outcome,
                instance: exchange.instance, context: context)
            tunnel.resumeTargetReads()
        }
    }
}
