import NIOCore

/// Turns the many flushes of an HTTP/2 client connection into one socket write per event-loop tick.
///
/// The streams of one client connection are answered from many upstream connections; each upstream
/// read ends in a flush of its stream, and swift-nio-http2 passes every such flush to the socket
/// unless it happens inside a read of the client connection itself. With hundreds of streams in
/// flight that is one `write(2)` per response (P2 in the README). This handler sits between the
/// socket (or TLS) and the HTTP/2 codec: a flush inside a client read waits for the read's end (as
/// swift-nio-http2 does itself), any other is deferred to a task that runs once the event loop has
/// handled every ready socket, so the responses of one tick leave in one `writev`. A close first
/// flushes what waits, so a GOAWAY written just before it is not lost.
final class FlushCoalescer: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var reading = false
    /// A flush was asked for and has not reached the socket yet.
    private var flushPending = false
    private var flushScheduled = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        if flushPending {
            flushPending = false
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        reading = false
        flushNow(context)
    }

    func flush(context: ChannelHandlerContext) {
        flushPending = true
        guard !reading, !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            if let context = self.context { self.flushNow(context) }
        }
    }

    /// Writes what waits now, not at the end of the tick: bulk tunnel data read from a target is
    /// sent while it is still in the CPU's cache, rather than after every other ready socket of the
    /// tick has been read too (megabytes with a few busy tunnels).
    func flushImmediately() {
        guard let context, !reading else { return }
        flushNow(context)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        flushNow(context)
        context.close(mode: mode, promise: promise)
    }

    private func flushNow(_ context: ChannelHandlerContext) {
        guard flushPending else { return }
        flushPending = false
        context.flush()
    }
}
