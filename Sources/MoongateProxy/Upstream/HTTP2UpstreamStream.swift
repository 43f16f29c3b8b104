import NIOCore
import NIOHPACK
import NIOHTTP2

/// What the client side of an exchange hears from its stream on an HTTP/2 upstream connection.
protocol HTTP2UpstreamStreamDelegate: AnyObject {
    /// Whether the client can take more right now (the upstream stream is not read while it cannot).
    var clientIsWritable: Bool { get }
    func upstreamStream(_ stream: HTTP2UpstreamStream, head: HPACKHeaders, endStream: Bool)
    func upstreamStream(_ stream: HTTP2UpstreamStream, data: ByteBuffer, endStream: Bool)
    func upstreamStream(_ stream: HTTP2UpstreamStream, trailers: HPACKHeaders)
    func upstreamStreamReadComplete(_ stream: HTTP2UpstreamStream)
    func upstreamStreamBecameWritable(_ stream: HTTP2UpstreamStream)
    /// The stream ended without a complete answer; `refused` when the upstream did not process it
    /// (REFUSED_STREAM before any answer, or a stream above its GOAWAY's last stream id), so the
    /// request may be sent again.
    func upstreamStream(_ stream: HTTP2UpstreamStream, failed code: HTTP2ErrorCode?, refused: Bool)
}

/// The handler of one request stream on an HTTP/2 upstream connection: response HEADERS, DATA and
/// trailers to its delegate, reads held while the client cannot take more (back-pressure), and the
/// stream's slot given back to its connection when it closes.
final class HTTP2UpstreamStream: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    let connection: HTTP2UpstreamConnection
    var delegate: (any HTTP2UpstreamStreamDelegate)?
    private var context: ChannelHandlerContext?
    private var responded = false
    private var ended = false
    private var pendingRead = false
    private var released = false

    init(connection: HTTP2UpstreamConnection, delegate: any HTTP2UpstreamStreamDelegate) {
        self.connection = connection
        self.delegate = delegate
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    var channel: (any Channel)? { context?.channel }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func send(_ payload: HTTP2Frame.FramePayload) { context?.write(wrapOutboundOut(payload), promise: nil) }

    func flush() { context?.flush() }

    /// Resets the stream (RST_STREAM CANCEL, by closing its channel) unless it is closed already:
    /// the client went away, or the answer is complete and the request is not (the upstream
    /// answered before the body ended), where the stream, still open on our side, would keep one
    /// of the upstream's concurrent streams.
    func cancel() {
        delegate = nil
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .headers(let headers):
            if !responded {
                let status = headers.headers.first(name: ":status") ?? ""
                if status.utf8.first == UInt8(ascii: "1") && !headers.endStream { return }  // 1xx: not relayed yet
                responded = true
                if headers.endStream { ended = true }
                delegate?.upstreamStream(self, head: headers.headers, endStream: headers.endStream)
            } else {
                ended = true
                delegate?.upstreamStream(self, trailers: headers.headers)
            }
        case .data(let frame):
            guard case .byteBuffer(let bytes) = frame.data else { return }
            if frame.endStream { ended = true }
            delegate?.upstreamStream(self, data: bytes, endStream: frame.endStream)
        case .rstStream(let code):
            guard !ended else { return }
            ended = true
            let delegate = self.delegate
            self.delegate = nil
            delegate?.upstreamStream(self, failed: code, refused: code == .refusedStream && !responded)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamStreamReadComplete(self)
        context.fireChannelReadComplete()
    }

    /// Gives the stream's slot back to its connection (once).
    func releaseSlot() {
        guard !released else { return }
        released = true
        connection.streamEnded()
    }

    func channelInactive(context: ChannelHandlerContext) {
        releaseSlot()
        if !ended, let delegate {
            ended = true
            self.delegate = nil
            let id = try? context.channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)
            delegate.upstreamStream(self, failed: nil, refused: !responded && connection.wasRefusedByGoAway(id))
        }
        delegate = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { delegate?.upstreamStreamBecameWritable(self) }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.clientIsWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// The client can take more: a held read goes on.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }
}
