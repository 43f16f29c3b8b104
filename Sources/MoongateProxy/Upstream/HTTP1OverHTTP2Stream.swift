import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Lets the HTTP/1.1 codec's exchanges use a stream of an HTTP/2 upstream connection as if it were
/// an HTTP/1.1 connection: the request bytes an exchange writes are parsed (Moongate's strict
/// ``ClientRequestParser``) and sent as HEADERS and DATA; the response comes back as HTTP/1.1 bytes
/// for the ``UpstreamHandler`` behind it (`Connection: close`: one exchange per stream). A CONNECT
/// becomes `:method CONNECT` + `:authority` only (CX-XLATE-2) and, after a 2xx, DATA ↔ raw bytes
/// with END_STREAM ↔ half-close, so the HTTP/1.1 codec's relay works unchanged. A WebSocket
/// handshake becomes an extended CONNECT `:protocol websocket` (RFC 8441) when the upstream allows
/// it, and its 2xx a `101` with the `Sec-WebSocket-Accept` of the client's key (CX-XLATE-5); any
/// other upgrade token becomes `:protocol <token>` the same way, and its 2xx a `101` naming it.
/// Response trailers go on in the last chunk of a chunked response.
final class HTTP1OverHTTP2Stream: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let connection: HTTP2UpstreamConnection
    private let parser: ClientRequestParser
    private var head: HPACKHeaders?
    private var headSent = false
    private var isConnect = false
    /// After a CONNECT's head: bytes both ways are tunnel data.
    private var raw = false
    private var chunkedResponse = false
    private var responded = false
    private var released = false
    /// The upgrade token of a translated handshake (lower-cased), and a WebSocket client's key.
    private var upgradeProtocol: String?
    private var webSocketKey: String?

    init(connection: HTTP2UpstreamConnection, limits: Limits) {
        self.connection = connection
        self.parser = ClientRequestParser(limits: limits)
    }

    // MARK: - Request: HTTP/1.1 bytes → frames

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var bytes = unwrapOutboundIn(data)
        if raw {
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: promise)
            return
        }
        do {
            let rest = try parser.feed(&bytes) { part in self.requestPart(part, context: context) }
            if let rest, rest.readableBytes > 0, raw {
                context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(rest)))), promise: nil)
            }
            promise?.succeed()
        } catch {
            promise?.fail(error)
            context.close(promise: nil)
        }
    }

    private func requestPart(_ part: ClientRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let request):
            var block: HPACKHeaders
            if request.isUpgrade {
                // An upgrade → extended CONNECT (RFC 8441, CX-XLATE-5), when the upstream allows it.
                let token = request.fields.first(named: "upgrade")?.lowercased() ?? ""
                let key = request.fields.first(named: "sec-websocket-key")
                guard connection.extendedConnect, !token.isEmpty, !token.contains(","), token != "websocket" || key != nil else {
                    answerLocally(
                        connection.extendedConnect ? "400 Bad Request" : "501 Not Implemented", context: context)
                    return
                }
                upgradeProtocol = token
                webSocketKey = key
                isConnect = true
                block = HPACKHeaders([
                    (":method", "CONNECT"), (":protocol", token), (":scheme", connection.scheme),
                    (":authority", request.fields.first(named: "host") ?? ""), (":path", request.uri),
                ])
                for field in request.fields {
                    let name = field.name.lowercased()
                    switch name {
                    case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                        "sec-websocket-key":
                        continue
                    default: block.add(name: name, value: field.value)
                    }
                }
            } else if request.isCONNECT {
                isConnect = true
                block = HPACKHeaders([(":method", "CONNECT"), (":authority", request.uri)])
            } else {
                let authority = request.fields.first(named: "host") ?? ""
                block = HPACKHeaders([(":method", request.method), (":scheme", connection.scheme), (":authority", authority), (":path", request.uri)])
                for field in request.fields {
                    let name = field.name.lowercased()
                    switch name {
                    case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade": continue
                    case "te" where field.value != "trailers": continue
                    default: block.add(name: name, value: field.value)
                    }
                }
            }
            head = block
        case .body(let bytes):
            sendHead(endStream: false, context: context)
            context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: nil)
        case .end:
            if isConnect {
                sendHead(endStream: false, context: context)
                raw = true
            } else if headSent {
                context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: nil)
            } else {
                sendHead(endStream: true, context: context)
            }
        }
    }

    private func sendHead(endStream: Bool, context: ChannelHandlerContext) {
        guard !headSent, let head else { return }
        headSent = true
        context.write(wrapOutboundOut(.headers(.init(headers: head, endStream: endStream))), promise: nil)
    }

    /// The relay's half-close (its client sent FIN): END_STREAM.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .output, raw else {
            context.close(mode: mode, promise: promise)
            return
        }
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: promise)
    }

    // MARK: - Response: frames → HTTP/1.1 bytes

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let frame):
            if responded {
                // Trailers end the body: in the last chunk when the response is chunked.
                if chunkedResponse {
                    var trailers: [HeaderField] = []
                    for (name, value, _) in frame.headers where name.utf8.first != UInt8(ascii: ":") {
                        trailers.append(HeaderField(name, value))
                    }
                    context.fireChannelRead(
                        wrapInboundOut(HTTP1Wire.lastChunk(trailers: trailers, allocator: context.channel.allocator)))
                }
                return
            }
            let status = Int(frame.headers.first(name: ":status") ?? "") ?? 502
            if status < 200 { return }
            responded = true
            var out = context.channel.allocator.buffer(capacity: 256)
            if let upgrade = upgradeProtocol, status / 100 == 2 {
                // The upstream accepted the extended CONNECT: the HTTP/1.1 client gets the 101 its
                // handshake expects, for WebSocket with the accept value for its own key.
                out.writeStaticString("HTTP/1.1 101 Switching Protocols\r\n")
                HTTP1Wire.writeField("upgrade", upgrade, into: &out)
                out.writeStaticString("connection: Upgrade\r\n")
                if let key = webSocketKey {
                    HTTP1Wire.writeField("sec-websocket-accept", WebSocketAccept.value(forKey: key), into: &out)
                }
                for (name, value, _) in frame.headers where name.hasPrefix("sec-websocket-") && name != "sec-websocket-accept" {
                    HTTP1Wire.writeField(name, value, into: &out)
                }
                out.writeStaticString("\r\n")
                context.fireChannelRead(wrapInboundOut(out))
                if frame.endStream { streamEnded(context: context) }
                return
            }
            HTTP1Wire.writeStatusLine(HTTPResponseStatus(statusCode: status), into: &out)
            var hasLength = false
            for (name, value, _) in frame.headers where name.utf8.first != UInt8(ascii: ":") {
                if name == "connection" || name == "transfer-encoding" || name == "keep-alive" { continue }
                hasLength = hasLength || name == "content-length"
                HTTP1Wire.writeField(name, value, into: &out)
            }
            if isConnect && status / 100 == 2 {
                out.writeStaticString("\r\n")  // then tunnel data
            } else {
                out.writeStaticString("connection: close\r\n")
                if !hasLength && status != 204 && status != 304 {
                    if frame.endStream {
                        out.writeStaticString("content-length: 0\r\n")
                    } else {
                        chunkedResponse = true
                        out.writeStaticString("transfer-encoding: chunked\r\n")
                    }
                }
                out.writeStaticString("\r\n")
            }
            context.fireChannelRead(wrapInboundOut(out))
            if frame.endStream { streamEnded(context: context) }
        case .data(let frame):
            guard case .byteBuffer(let bytes) = frame.data else { return }
            if chunkedResponse && bytes.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(HTTP1Wire.chunkPrefix(bytes.readableBytes, allocator: context.channel.allocator)))
                context.fireChannelRead(wrapInboundOut(bytes))
                context.fireChannelRead(wrapInboundOut(HTTP1Wire.chunkEnd))
            } else if bytes.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(bytes))
            }
            if frame.endStream { streamEnded(context: context) }
        case .rstStream(let code):
            if code == .refusedStream && !responded { context.fireErrorCaught(HTTP2StreamRefused()) }
            context.close(promise: nil)
        default:
            break
        }
    }

    private func streamEnded(context: ChannelHandlerContext) {
        if chunkedResponse {
            emit("0\r\n\r\n", context: context)
        } else if raw {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    private func emit(_ text: String, context: ChannelHandlerContext) {
        context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(string: text)))
    }

    private func answerLocally(_ status: String, context: ChannelHandlerContext) {
        responded = true
        emit("HTTP/1.1 \(status)\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", context: context)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A stream above the GOAWAY's last stream id was not processed either.
        if !responded, let id = try? context.channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID),
            connection.wasRefusedByGoAway(id)
        {
            context.fireErrorCaught(HTTP2StreamRefused())
        }
        if !released {
            released = true
            connection.streamEnded()
        }
        context.fireChannelInactive()
    }
}

extension HTTP2UpstreamPool {
    /// A stream of an HTTP/2 cluster, set up for the HTTP/1.1 codec: its ``UpstreamHandler``.
    static func openHTTP1Stream(
        to cluster: ClusterTarget, runtime: ProxyRuntime, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpstreamHandler> {
        let pool = pool(on: eventLoop)
        let connection = pool.connection(to: cluster, runtime: runtime)
        let limits = runtime.config.limits
        let key = cluster.poolKey
        return connection.ready.assumeIsolated().flatMap { () -> EventLoopFuture<any Channel> in
            guard let multiplexer = connection.multiplexer, connection.keepReservation() else {
                // Over the peer's limit once its SETTINGS came (or going away): another connection.
                return openHTTP1Stream(to: cluster, runtime: runtime, on: eventLoop).assumeIsolated().flatMapThrowing { handler in
                    guard let channel = handler.channel else { throw ChannelError.ioOnClosedChannel }
                    return channel
                }.nonisolated()
            }
            let adapter = NIOLoopBound(HTTP1OverHTTP2Stream(connection: connection, limits: limits), eventLoop: eventLoop)
            return multiplexer.createStreamChannel { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(adapter.value)
                    try HTTP1Pipeline.configureUpstream(channel.pipeline.syncOperations, key: key, limits: limits)
                }
            }
        }.flatMapThrowing { channel in
            try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
        }.nonisolated()
    }
}

/// An HTTP/2 upstream refused a stream without processing it (RST_STREAM REFUSED_STREAM before any
/// answer, or a stream above its GOAWAY's last stream id): a request without a body may be sent again.
struct HTTP2StreamRefused: Error, CustomStringConvertible {
    var description: String { "the HTTP/2 upstream refused the stream without processing it" }
}
