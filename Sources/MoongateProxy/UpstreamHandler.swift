import Logging
import MoongateConfig
import NIOCore
import NIOHTTP1

/// What the client side of an exchange hears from its upstream connection.
protocol UpstreamDelegate: AnyObject {
    /// Whether the client can take more bytes right now (upstream reads wait while it cannot).
    var clientIsWritable: Bool { get }
    func upstream(_ upstream: UpstreamHandler, received part: HTTPClientResponsePart)
    func upstreamBecameWritable(_ upstream: UpstreamHandler)
    /// A batch of reads ended: time to flush what was written to the client.
    func upstreamReadComplete(_ upstream: UpstreamHandler)
    /// The upstream connection closed or failed during the exchange.
    func upstream(_ upstream: UpstreamHandler, failed error: (any Error)?)
}

/// The last handler of an upstream HTTP/1.1 connection: passes response parts to the exchange that
/// owns the connection, gates reads on the client's writability (back-pressure), and tells the pool
/// when an idle connection closes.
final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// The pool key (`host:port`) this connection belongs to.
    let key: String
    weak var delegate: (any UpstreamDelegate)?
    /// Set while idle in a pool, so a close can be reported there.
    weak var pools: UpstreamPools?
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Set when the connection becomes a tunnel: inbound data is raw bytes, kept for the relay.
    var rawMode = false
    var rawPending = RawBytes()

    init(key: String) {
        self.key = key
    }

    var channel: (any Channel)? { context?.channel }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        rawPending.flush(context)
        context.leavePipeline(removalToken: removalToken)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if rawMode {
            rawPending.append(data)
            return
        }
        let part = unwrapInboundIn(data)
        if let delegate {
            delegate.upstream(self, received: part)
        }
        // A response with no exchange (idle connection) is a protocol error: drop the connection.
        else {
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete(self)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let delegate {
            self.delegate = nil
            delegate.upstream(self, failed: nil)
        }
        pools?.remove(context.channel, key: key)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event, !rawMode {
            // The upstream finished sending (connections allow half-closure for upgrades). A
            // close-delimited response has had its `.end` by now; anything still open failed.
            if let delegate {
                self.delegate = nil
                delegate.upstream(self, failed: nil)
            }
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let delegate {
            self.delegate = nil
            delegate.upstream(self, failed: error)
        }
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { delegate?.upstreamBecameWritable(self) }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if rawMode {
            context.read()
        } else if let delegate, !delegate.clientIsWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// The client became writable again: resume a held read.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func write(_ part: HTTPClientRequestPart, flush: Bool = false) {
        guard let context else { return }
        context.write(wrapOutboundOut(part), promise: nil)
        if flush { context.flush() }
    }

    func flush() { context?.flush() }
}
