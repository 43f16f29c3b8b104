import Logging
import MoongateConfig
import NIOCore

/// The socket end of a tunnel: the relay between a socket channel and its partner on the same
/// event loop, another socket channel's ``GlueHandler`` (an HTTP/1.1 tunnel) or an HTTP/2 stream
/// (``StreamTunnel``).
///
/// Reads are gated on the partner's ``TunnelEnd/acceptsWrites`` (back-pressure both ways), and
/// half-closure is propagated: the input closing on one side becomes `close(mode: .output)` on the
/// other, after every byte already read has been written, so nothing is truncated. When both
/// directions are done, the channel closes. The channel must allow remote half-closure.
package final class GlueHandler: ChannelDuplexHandler, TunnelEnd {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private var partner: (any TunnelEnd)?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    private var outputClosed = false
    /// An error was caught on this channel (its partner is told it failed, not ended).
    private var failed = false
    /// Bytes read on this side (relayed to the partner).
    private(set) var bytesRead = 0
    /// Set by every read; the idle sweeper takes it (see ``takeActivity()``).
    package var sawTraffic = false
    /// Idle sweeps in a row with no traffic either way.
    var idleSweeps = 0

    /// Grows the channel's reads for bulk (a socket channel's option).
    private let tunesReads: Bool

    private init(tunesReads: Bool = true) { self.tunesReads = tunesReads }

    /// Two handlers that relay to each other. `secondOnSocket: false` when the second goes on an
    /// HTTP/2 stream channel (an HTTP/1.1 client's CONNECT to an HTTP/2 parent), whose reads are
    /// the library's own.
    package static func matchedPair(secondOnSocket: Bool = true) -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler(tunesReads: secondOnSocket)
        first.partner = second
        second.partner = first
        return (first, second)
    }

    /// The end facing another kind of end (an HTTP/2 stream), which keeps this one as its partner;
    /// `onSocket: false` when it goes on an HTTP/2 stream channel itself (a parent over HTTP/2).
    static func facing(_ partner: any TunnelEnd, onSocket: Bool = true) -> GlueHandler {
        let glue = GlueHandler(tunesReads: onSocket)
        glue.partner = partner
        return glue
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Bulk relays grow their reads up to 256 KiB (fewer syscalls per byte); an idle tunnel keeps
        // the small initial buffer NIO reuses per channel. (An HTTP/2 stream channel traps on this
        // option: a relay end on one is made with `tunesReads` off, rather than asking the
        // channel's type by name here, which cost ten allocations per tunnel.)
        if tunesReads {
            context.channel.setOption(.recvAllocator, value: GlueHandler.allocator).whenFailure { _ in }
        }
    }

    private static let allocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 262_144)

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesRead += buffer.readableBytes
        sawTraffic = true
        partner?.partnerWrite(buffer)
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerClosed(failed: failed)
        context.fireChannelInactive()
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputClosed = true
            partner?.partnerWriteEOF()
            closeIfDone()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed = true
        partner?.partnerClosed(failed: true)
        context.close(promise: nil)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    package func read(context: ChannelHandlerContext) {
        if let partner, partner.acceptsWrites {
            context.read()
        } else {
            pendingRead = true
        }
    }

    /// The partner joined its pipeline: a read held until then goes ahead.
    package func partnerIsReady() { partnerBecameWritable() }

    /// True when either side moved bytes since the last call (and clears both).
    func takeActivity() -> Bool {
        let active = sawTraffic || (partner?.sawTraffic ?? false)
        sawTraffic = false
        partner?.sawTraffic = false
        return active
    }

    /// Whether a dialled upstream channel is a socket (a connection of its own, with no parent),
    /// not a stream of an HTTP/2 upstream connection dressed as one (whose reads are the library's;
    /// see ``matchedPair(secondOnSocket:)``).
    static func isSocket(upstream channel: any Channel) -> Bool { channel.parent == nil }

    /// Drops the partner (a relay whose connection never came up).
    func forgetPartner() { partner = nil }

    /// The socket channel's writability (what ``acceptsWrites`` tells the partner).
    var channelIsWritable: Bool { context?.channel.isWritable ?? false }

    /// Closes this side (the partner follows).
    func closeTunnel() { context?.close(promise: nil) }

    // MARK: - Called by the partner (TunnelEnd)

    package func partnerWrite(_ buffer: ByteBuffer) { context?.write(wrapOutboundOut(buffer), promise: nil) }
    package func partnerFlush() { context?.flush() }

    package func partnerWriteEOF() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        context.flush()
        context.close(mode: .output, promise: nil)
        closeIfDone()
    }

    package func partnerClosed(failed: Bool) { context?.close(promise: nil) }

    package func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    package var acceptsWrites: Bool { context?.channel.isWritable ?? false }

    /// Both directions have finished on this side's channel: close it fully.
    private func closeIfDone() {
        if inputClosed && outputClosed { context?.close(promise: nil) }
    }
}
