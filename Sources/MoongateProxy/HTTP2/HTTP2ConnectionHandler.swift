import Logging
import NIOCore
import NIOHTTP2

/// An HTTP/2 client connection behind swift-nio-http2's `NIOHTTP2Handler`, which runs with no
/// stream multiplexer: this handler takes every frame, keeps the table of open streams, and hands
/// each stream's frames to its ``HTTP2StreamHandler`` (+Streams), with no channel per stream (a
/// child channel per stream cost about 6 µs per request, `scripts/bench/h2-request-cost`). It
/// returns flow-control credit itself: the connection's as DATA arrives, a stream's as its reader
/// takes it (``HTTP2StreamContext``).
///
/// At the connection level: a client's FIN closes the connection (HTTP/2 has no half-closed connections; the listener allows
/// half-closure for HTTP/1.1 tunnels); graceful shutdown, and a reload that changes the settings
/// the connection was opened with, send GOAWAY and close once the streams in flight have ended;
/// an abusive client (one of the library's flood guards, or
/// ``HTTP2FloodGuard``) gets GOAWAY and a closed connection.
final class HTTP2ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    let guardian: HTTP2FloodGuard
    private let logger: Logger
    var quiescing = false
    private var closing = false
    /// The highest stream the client opened (the last GOAWAY of a graceful shutdown names it).
    var lastStreamID = HTTP2StreamID.rootStream

    /// The connection's receive window (`http2.initial_connection_window`).
    let connectionWindow: Int
    private var connectionWindowOpened = false
    /// A connection WINDOW_UPDATE is written and the codec has not yet shown it applied.
    var connectionCreditPending = false
    /// The streams' receive window (`http2.initial_stream_window`): credit goes back at a quarter of it.
    let streamWindow: Int

    /// The open streams.
    var streams: [HTTP2StreamID: HTTP2StreamHandler] = [:]
    /// Streams that had frames in the current read batch (told when it ends).
    var touched: [HTTP2StreamHandler] = []
    /// Makes the handler of a stream the client opened.
    let makeStream: (HTTP2StreamContext) -> HTTP2StreamHandler

    /// The SETTINGS this connection was opened with.
    let advertised: HTTP2Settings
    /// The loop's connections (this one is in it while it is in a pipeline).
    private let siblings: HTTP2ConnectionSet

    init(
        guardian: HTTP2FloodGuard, connectionWindow: Int, streamWindow: Int, advertised: HTTP2Settings, siblings: HTTP2ConnectionSet,
        logger: Logger, makeStream: @escaping (HTTP2StreamContext) -> HTTP2StreamHandler
    ) {
        self.advertised = advertised
        self.streamWindow = streamWindow
        self.makeStream = makeStream
        self.siblings = siblings
        self.guardian = guardian
        self.connectionWindow = connectionWindow
        self.logger = logger
    }

    var context: ChannelHandlerContext?
    /// The flush coalescer in front of the codec (see ``flushStreamsNow()``). Strong, as every
    /// reference to the pipeline's handlers here: a weak one gives its object a side table, and then
    /// each retain and release of it (the pipeline makes several per frame) takes the slow path.
    var coalescer: FlushCoalescer?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        siblings.add(self)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        // Strong (see `coalescer`); the cycle through the guard ends in `handlerRemoved`.
        guardian.onFlood = { what in
            let context = loopBound.value
            let goAway = HTTP2Frame(
                streamID: .rootStream, payload: .goAway(lastStreamID: .rootStream, errorCode: .enhanceYourCalm, opaqueData: nil))
            context.writeAndFlush(self.wrapOutboundOut(goAway), promise: nil)
            self.abandon(what, context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAllStreams()
        self.context = nil
        siblings.remove(self)
        guardian.onFlood = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.streamID == .rootStream else {
            streamFrame(frame, context: context)
            return
        }
        switch frame.payload {
        case .windowUpdate:
            guardian.windowUpdateReceived()
        case .settings(.settings) where !connectionWindowOpened:
            // The client's preface is in: the connection window grows from RFC 9113's 65,535 to
            // `http2.initial_connection_window` (kept there as DATA arrives: connectionWindowChanged).
            connectionWindowOpened = true
            let increment = connectionWindow - 65_535
            if increment > 0 {
                connectionCreditPending = true
                let frame = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))
                context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
            }
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readBatchEnded()
        context.flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for stream in Array(streams.values) { stream.writabilityChanged() }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeAllStreams()
        context.fireChannelInactive()
    }

    /// Drains the connection (a reload changed its settings): GOAWAY, then it closes once its
    /// streams are done.
    func drain(reason: String) {
        guard let context, !quiescing else { return }
        logger.debug("HTTP/2 connection draining", metadata: ["reason": "\(reason)"])
        quiesce(context: context)
    }

    /// RFC 9113 §6.8: a first GOAWAY that refuses nothing yet, then, once requests already on the
    /// wire have arrived, one naming the last stream that will be served; the connection closes
    /// when its last stream does.
    func quiesce(context: ChannelHandlerContext) {
        guard !quiescing else { return }
        quiescing = true
        goAway(.maxID, context: context)
        if streams.isEmpty {
            context.close(promise: nil)
        } else {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .seconds(1)) {
                let (handler, context) = loopBound.value
                guard context.channel.isActive else { return }
                handler.goAway(handler.lastStreamID, context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // swift-nio-http2 has already sent its GOAWAY; the connection goes. A stream error has
        // reset its stream, whose close comes as a StreamClosedEvent.
        if HTTP2FloodGuard.endsConnection(error) { abandon("\(error)", context: context) }
    }

    private func goAway(_ last: HTTP2StreamID, context: ChannelHandlerContext) {
        let frame = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: last, errorCode: .noError, opaqueData: nil))
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    /// Closes a connection whose client misbehaved, once the GOAWAY is out.
    private func abandon(_ what: String, context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        logger.info("HTTP/2 client connection closed", metadata: ["reason": "\(what)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Window events come with every DATA frame either way: they are tested first, and a stream's
        // goes no further (nothing after this handler wants it; each cast from `Any` costs).
        switch event {
        case let window as NIOHTTP2WindowUpdatedEvent:
            if window.streamID == .rootStream, connectionWindowOpened, let inbound = window.inboundWindowSize {
                connectionWindowChanged(inbound: inbound)
            }
            return
        case let closed as StreamClosedEvent:
            streamClosed(closed.streamID)
            return
        case let event as ChannelEvent where event == .inputClosed:
            context.close(promise: nil)
            return
        case is ChannelShouldQuiesceEvent:
            quiesce(context: context)
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }
}
