import NIOCore

/// Raw bytes that arrived after HTTP ended on a channel (early data, bytes after a 101 or 2xx),
/// kept in order until the relay is in place.
struct RawBytes {
    private var pending: [NIOAny] = []

    mutating func append(_ data: NIOAny) { pending.append(data) }

    /// How many reads are kept.
    var count: Int { pending.count }

    mutating func discard() { pending = [] }

    /// Hands the kept bytes to the next handler, in order (called while the keeper leaves).
    mutating func flush(_ context: ChannelHandlerContext) {
        let kept = pending
        pending = []
        for data in kept { context.fireChannelRead(data) }
        if !kept.isEmpty { context.fireChannelReadComplete() }
    }
}

/// Keeps whatever a freshly dialled tunnel target sends before the relay is in place (a server that
/// speaks first), and hands it on in order when it leaves the pipeline.
final class EarlyBytesHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var kept = RawBytes()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { kept.append(data) }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        kept.flush(context)
        context.leavePipeline(removalToken: removalToken)
    }
}
