import NIOCore

/// Gathers the small writes a codec makes between two flushes into one buffer, so that TLS seals
/// them as one record instead of one record each.
///
/// swift-nio-ssl hands every write to BoringSSL on its own, and each becomes a TLS record of its
/// own: an HTTP/2 response is three (the HEADERS frame, the DATA frame's header, its payload), and
/// a flush that carries the responses of many streams is three records per stream, each sealed
/// separately. This handler sits right behind the TLS handler: writes under ``passThroughSize``
/// are copied into one buffer that goes on at the flush (in order, with their promises completed
/// when it is written); larger ones (bulk bodies, tunnel data) go on as they are, after what was
/// gathered before them. Over cleartext the socket's `writev` does this work, so it is not used.
/// Public for the benchmark floors (`moongate-h2-floor --tls`), which seal records the same way.
public final class TLSRecordGatherer: ChannelOutboundHandler {
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Writes this large or larger are not copied.
    static let passThroughSize = 4096

    public init() {}

    private var gathered: ByteBuffer?
    private var promises: [EventLoopPromise<Void>] = []

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var bytes = unwrapOutboundIn(data)
        guard bytes.readableBytes < Self.passThroughSize else {
            emit(context)
            context.write(data, promise: promise)
            return
        }
        if gathered == nil {
            gathered = context.channel.allocator.buffer(capacity: max(2048, bytes.readableBytes))
        }
        gathered!.writeBuffer(&bytes)
        if let promise { promises.append(promise) }
    }

    public func flush(context: ChannelHandlerContext) {
        emit(context)
        context.flush()
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Unflushed writes meet the close as they would have without this handler.
        emit(context)
        context.close(mode: mode, promise: promise)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        emit(context)
    }

    /// Passes what was gathered on as one write.
    private func emit(_ context: ChannelHandlerContext) {
        guard let buffer = gathered else { return }
        gathered = nil
        guard !promises.isEmpty else {
            context.write(wrapOutboundOut(buffer), promise: nil)
            return
        }
        let waiting = promises
        promises.removeAll()
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { result in
            for each in waiting { each.completeWith(result) }
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }
}
