import NIOCore

/// The TCP half of a CONNECT stream terminated here: bytes both ways between the HTTP/2 stream
/// (``HTTP2StreamHandler``) and the target's connection, with back-pressure tied to the target
/// socket's writability one way and to the stream's flow-control window the other, and half-close
/// carried over (END_STREAM ↔ FIN).
final class StreamTunnel {
    /// The stream side (strong until the relay ends: the stream's state holds this tunnel).
    private(set) var stream: HTTP2StreamHandler?
    /// The target's connection, once dialled.
    var target: (any Channel)?
    let targetSide: TargetSide
    private(set) var bytesToTarget = 0
    private(set) var bytesFromTarget = 0

    init(stream: HTTP2StreamHandler) {
        self.stream = stream
        self.targetSide = TargetSide()
        targetSide.tunnel = self
    }

    /// DATA from the client, to the target (flushed per read batch).
    func toTarget(_ bytes: ByteBuffer) {
        bytesToTarget += bytes.readableBytes
        target?.write(bytes, promise: nil)
    }

    func flushTarget() { target?.flush() }

    /// The client sent END_STREAM: the target gets a FIN (and may go on answering).
    func clientEnded() {
        target?.flush()
        target?.close(mode: .output, promise: nil)
    }

    var targetIsWritable: Bool { target?.isWritable ?? true }

    /// The stream can take DATA again: the target's reads resume.
    func resumeTargetReads() { targetSide.resume() }

    fileprivate func fromTarget(_ bytes: ByteBuffer) {
        bytesFromTarget += bytes.readableBytes
        stream?.targetData(bytes)
    }

    fileprivate func targetReadComplete() { stream?.targetReadComplete() }
    fileprivate func targetEnded() { stream?.targetEnded() }
    fileprivate func targetWritable() { stream?.resumeClientReads() }

    fileprivate func targetClosed(failed: Bool) {
        if failed { stream?.targetFailed() }
        stream = nil
    }

    /// The handler on the target's connection. It holds reads until the stream's 200 is out and
    /// whenever the stream's window is closed.
    final class TargetSide: ChannelDuplexHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        fileprivate var tunnel: StreamTunnel?
        private var context: ChannelHandlerContext?
        private var ready = false
        private var pendingRead = false
        private var ended = false
        private var failed = false

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

        /// The tunnel is up (or the stream's window opened): reading may go on.
        func resume() {
            ready = true
            guard pendingRead, let context else { return }
            pendingRead = false
            context.read()
        }

        func read(context: ChannelHandlerContext) {
            if ready && (tunnel?.stream?.streamIsWritable ?? true) {
                context.read()
            } else {
                pendingRead = true
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            tunnel?.fromTarget(unwrapInboundIn(data))
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            tunnel?.targetReadComplete()
            context.fireChannelReadComplete()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, case .inputClosed = event {
                ended = true
                tunnel?.targetEnded()
                return
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable { tunnel?.targetWritable() }
            context.fireChannelWritabilityChanged()
        }

        func channelInactive(context: ChannelHandlerContext) {
            // A FIN after our own FIN closes the socket without an inputClosed event: that end is
            // as clean as a half-close. Only an error (a reset) resets the stream.
            if !ended && !failed {
                ended = true
                tunnel?.targetEnded()
            }
            tunnel?.targetClosed(failed: failed)
            tunnel = nil
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            failed = true
            context.close(promise: nil)
        }
    }
}
