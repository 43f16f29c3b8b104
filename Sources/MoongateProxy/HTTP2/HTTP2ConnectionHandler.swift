import Logging
import NIOCore
import NIOHTTP2

/// The connection-level part of an HTTP/2 client connection, behind swift-nio-http2's handler:
/// a client's FIN closes the connection (HTTP/2 has no half-closed connections; the listener allows
/// half-closure for HTTP/1.1 tunnels); graceful shutdown, and a reload that changes the settings
/// the connection was opened with, send GOAWAY and close once the streams in flight have ended;
/// an abusive client (one of the library's flood guards, or
/// ``HTTP2FloodGuard``) gets GOAWAY and a closed connection.
final class HTTP2ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let guardian: HTTP2FloodGuard
    private let logger: Logger
    private var openStreams = 0
    private var quiescing = false
    private var closing = false
    /// The highest stream the client opened (the last GOAWAY of a graceful shutdown names it).
    private var lastStreamID = HTTP2StreamID.rootStream

    /// The connection's receive window (`http2.initial_connection_window`).
    private let connectionWindow: Int
    private var connectionWindowOpened = false

    /// The SETTINGS this connection was opened with.
    let advertised: HTTP2Settings
    /// The loop's connections (this one is in it while it is in a pipeline).
    private let siblings: HTTP2ConnectionSet

    init(guardian: HTTP2FloodGuard, connectionWindow: Int, advertised: HTTP2Settings, siblings: HTTP2ConnectionSet, logger: Logger) {
        self.advertised = advertised
        self.siblings = siblings
        self.guardian = guardian
        self.connectionWindow = connectionWindow
        self.logger = logger
    }

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        siblings.add(self)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        guardian.onFlood = { [weak self] what in
            guard let self else { return }
            let context = loopBound.value
            let goAway = HTTP2Frame(
                streamID: .rootStream, payload: .goAway(lastStreamID: .rootStream, errorCode: .enhanceYourCalm, opaqueData: nil))
            context.writeAndFlush(self.wrapOutboundOut(goAway), promise: nil)
            self.abandon(what, context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        siblings.remove(self)
        guardian.onFlood = nil
    }

    /// A client stream opened (told by swift-nio-http2's stream delegate: its inline multiplexer
    /// does not pass stream events down the connection's pipeline).
    func streamCreated(_ id: HTTP2StreamID) {
        openStreams += 1
        lastStreamID = max(lastStreamID, id)
        guardian.streamOpened()
    }

    /// A stream closed; the last one of a draining connection closes it.
    func streamClosed(_ id: HTTP2StreamID) {
        openStreams -= 1
        guard quiescing, openStreams <= 0, let context else { return }
        // The stream's last frames are flushed after this call returns: close on the next tick.
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.execute { loopBound.value.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .windowUpdate:
            guardian.windowUpdateReceived()
        case .settings(.settings) where !connectionWindowOpened:
            // The client's preface is in: the connection window grows from RFC 9113's 65,535 to
            // `http2.initial_connection_window` (swift-nio-http2 keeps it there as DATA is read).
            connectionWindowOpened = true
            let increment = connectionWindow - 65_535
            if increment > 0 {
                let frame = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))
                context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
            }
        default:
            break
        }
        context.fireChannelRead(data)
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
    private func quiesce(context: ChannelHandlerContext) {
        guard !quiescing else { return }
        quiescing = true
        goAway(.maxID, context: context)
        if openStreams <= 0 {
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
        // swift-nio-http2 has already sent its GOAWAY; the connection goes.
        if HTTP2FloodGuard.endsConnection(error) { abandon("\(error)", context: context) }
        context.fireErrorCaught(error)
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
        switch event {
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

/// Tells the ``HTTP2ConnectionHandler`` when streams open and close (on the connection's loop).
struct HTTP2StreamEvents: NIOHTTP2StreamDelegate {
    let handler: NIOLoopBound<HTTP2ConnectionHandler>

    func streamCreated(_ id: HTTP2StreamID, channel: any Channel) { handler.value.streamCreated(id) }

    func streamClosed(_ id: HTTP2StreamID, channel: any Channel) { handler.value.streamClosed(id) }
}
