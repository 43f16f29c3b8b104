import NIOCore

/// On a listener that speaks both HTTP/1.1 and HTTP/2 with prior knowledge, the first bytes of a
/// connection tell them apart: the HTTP/2 connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`,
/// RFC 9113 §3.4) cannot start an HTTP/1.1 request. The sniffer keeps bytes until they match the
/// preface or stop matching it, installs the pipeline of the protocol found, hands it the bytes
/// read so far and leaves.
final class PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Installs the pipeline of the protocol found (after this handler).
    private let install: (_ http2: Bool, _ pipeline: ChannelPipeline.SynchronousOperations) throws -> Void
    private var kept: ByteBuffer?

    init(install: @escaping (_ http2: Bool, _ pipeline: ChannelPipeline.SynchronousOperations) throws -> Void) {
        self.install = install
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if kept == nil {
            kept = incoming
        } else {
            kept!.writeBuffer(&incoming)
        }
        guard let bytes = kept else { return }
        let seen = min(bytes.readableBytes, Self.preface.count)
        let matches = bytes.readableBytesView.prefix(seen).elementsEqual(Self.preface.prefix(seen))
        if matches && seen < Self.preface.count { return }  // not decided yet
        decide(http2: matches, context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed before deciding: nothing to serve.
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // The client half-closed before the preface was complete: bytes so far are an (incomplete)
        // HTTP/1.1 request, which that handler answers; nothing at all is a connection to close.
        if kept?.readableBytes ?? 0 > 0 {
            decide(http2: false, context: context)
            context.fireUserInboundEventTriggered(event)
        } else {
            context.close(promise: nil)
        }
    }

    private func decide(http2: Bool, context: ChannelHandlerContext) {
        do {
            try install(http2, context.pipeline.syncOperations)
        } catch {
            context.close(promise: nil)
            return
        }
        if let bytes = kept {
            kept = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
