import Logging
import MoongateConfig
import NIOCore
import NIOHTTP1

/// What the client side of an exchange hears from its upstream connection.
protocol UpstreamDelegate: AnyObject {
    /// Whether the client can take more bytes right now (upstream reads wait while it cannot).
    var clientIsWritable: Bool { get }
    func upstream(_ upstream: UpstreamHandler, received part: UpstreamPart)
    func upstreamBecameWritable(_ upstream: UpstreamHandler)
    /// A batch of reads ended: time to flush what was written to the client.
    func upstreamReadComplete(_ upstream: UpstreamHandler)
    /// The upstream connection closed or failed during the exchange, or answered something invalid.
    func upstream(_ upstream: UpstreamHandler, failed error: (any Error)?)
}

/// The last handler of an upstream HTTP/1.1 connection: parses responses
/// (``UpstreamResponseParser``) for the exchange that owns the connection, gates reads on the
/// client's writability (back-pressure), and tells the pool when an idle connection closes.
/// Requests go out as bytes the exchange serialised (see ``HTTP1ProxyHandler/upstreamHead``).
final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The pool key (`host:port`) this connection belongs to.
    let key: String
    /// The exchange's client side, while an exchange owns this connection. Strong, not weak (a weak
    /// reference would give the client handler a side table and slow every retain and release of
    /// it); every end of an exchange sets it back to nil.
    var delegate: (any UpstreamDelegate)?
    /// Set while idle in a pool, so a close can be reported there.
    var idlePool: IdleConnections?
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false
    private let parser: UpstreamResponseParser
    /// Set when the connection becomes a tunnel: inbound data is raw bytes, kept for the relay.
    var rawMode = false
    var rawPending = RawBytes()

    init(key: String, maxHeadBytes: Int, maxFields: Int) {
        self.key = key
        self.parser = UpstreamResponseParser(maxHeadBytes: maxHeadBytes, maxFields: maxFields)
    }

    var channel: (any Channel)? { context?.channel }

    /// In a pipeline whose connection has not closed (tracked here: asking the channel costs more).
    private(set) var isOpen = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        isOpen = context.channel.isActive
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        isOpen = false
    }

    func channelActive(context: ChannelHandlerContext) {
        isOpen = true
        context.fireChannelActive()
    }

    /// Closes the connection.
    func close() { context?.close(promise: nil) }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        rawPending.flush(context)
        context.leavePipeline(removalToken: removalToken)
    }

    /// A request is about to be written: its response is now due.
    func expectResponse(_ expectation: UpstreamResponseParser.Expectation) {
        parser.expect(expectation)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if rawMode {
            rawPending.append(data)
            return
        }
        var buffer = unwrapInboundIn(data)
        guard let delegate else {
            // Bytes on an idle connection are a protocol error: drop the connection.
            context.close(promise: nil)
            return
        }
        do {
            let rest = try parser.feed(&buffer) { part in delegate.upstream(self, received: part) }
            if let rest, rest.readableBytes > 0 { rawPending.append(NIOAny(rest)) }
        } catch {
            fail(error, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete(self)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isOpen = false
        inputEnded(context: context)
        idlePool?.remove(self)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event, !rawMode {
            // The upstream finished sending (connections allow half-closure for upgrades): a
            // close-delimited response ends here; anything else still open failed.
            inputEnded(context: context)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func inputEnded(context: ChannelHandlerContext) {
        guard !rawMode, let delegate else { return }
        do {
            try parser.inputEnded { part in delegate.upstream(self, received: part) }
        } catch {
            fail(error, context: context)
            return
        }
        if let delegate = self.delegate {
            self.delegate = nil
            delegate.upstream(self, failed: nil)
        }
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        if let delegate {
            self.delegate = nil
            delegate.upstream(self, failed: error)
        }
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error, context: context)
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

    func write(_ bytes: ByteBuffer) {
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() { context?.flush() }
}
