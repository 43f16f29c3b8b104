import NIOCore
import NIOHTTP2

/// The connection-level part of an HTTP/2 client connection, behind swift-nio-http2's handler:
/// a client's FIN closes the connection (HTTP/2 has no half-closed connections; the listener allows
/// half-closure for HTTP/1.1 tunnels), and graceful shutdown sends GOAWAY and closes once the
/// streams in flight have ended.
final class HTTP2ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private var openStreams = 0
    private var quiescing = false

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is NIOHTTP2StreamCreatedEvent:
            openStreams += 1
        case is StreamClosedEvent:
            openStreams -= 1
            if quiescing && openStreams <= 0 { context.close(promise: nil) }
        case let event as ChannelEvent where event == .inputClosed:
            context.close(promise: nil)
            return
        case is ChannelShouldQuiesceEvent:
            quiescing = true
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
            context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
            if openStreams <= 0 { context.close(promise: nil) }
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }
}
