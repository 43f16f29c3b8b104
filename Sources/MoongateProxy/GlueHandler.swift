import Logging
import MoongateConfig
import NIOCore

/// One end of a byte relay between two channels on the same event loop (a tunnel).
///
/// Reads are gated on the partner's writability (back-pressure both ways), and half-closure is
/// propagated: the input closing on one side becomes `close(mode: .output)` on the other, after
/// every byte already read has been written, so nothing is truncated. When both directions are
/// done, both channels close. Both channels must allow remote half-closure.
package final class GlueHandler: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    private var outputClosed = false
    /// Bytes read on this side (relayed to the partner).
    private(set) var bytesRead = 0
    /// Set by every read; the idle sweeper takes it (see ``takeActivity()``).
    private var sawTraffic = false
    /// Idle sweeps in a row with no traffic either way.
    var idleSweeps = 0

    private init() {}

    /// Two handlers that relay to each other.
    package static func matchedPair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Bulk relays grow their reads up to 256 KiB (fewer syscalls per byte); an idle tunnel keeps
        // the small initial buffer NIO reuses per channel. (An HTTP/2 stream channel, which NIOHTTP2
        // keeps internal, traps on this option: a relay over one keeps its own reads.)
        if !String(describing: type(of: context.channel)).hasSuffix("HTTP2StreamChannel") {
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
        partner?.partnerCloseFull()
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
        partner?.partnerCloseFull()
        context.close(promise: nil)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    package func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerWritable {
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

    /// Closes this side (the partner follows).
    func closeTunnel() { context?.close(promise: nil) }

    // MARK: - Called by the partner

    private func partnerWrite(_ buffer: ByteBuffer) { context?.write(wrapOutboundOut(buffer), promise: nil) }
    private func partnerFlush() { context?.flush() }

    private func partnerWriteEOF() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        context.flush()
        context.close(mode: .output, promise: nil)
        closeIfDone()
    }

    private func partnerCloseFull() { context?.close(promise: nil) }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    /// Both directions have finished on this side's channel: close it fully.
    private func closeIfDone() {
        if inputClosed && outputClosed { context?.close(promise: nil) }
    }
}
