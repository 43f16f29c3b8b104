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
