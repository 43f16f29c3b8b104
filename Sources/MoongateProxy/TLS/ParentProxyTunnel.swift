import MoongateConfig
import NIOCore

/// Why a parent proxy did not open the tunnel to a cluster's endpoint.
struct ParentProxyError: Error, CustomStringConvertible {
    /// The parent's status, or nil when it closed or answered something that is not HTTP.
    let status: Int?
    let detail: String
    var description: String {
        status.map { "the parent proxy answered \($0) to CONNECT" } ?? "the parent proxy failed: \(detail)"
    }
}

/// The first step on a connection to a parent HTTP proxy: sends `CONNECT host:port` in the clear,
/// reads the answer's head, and on a 2xx completes `established` and leaves, so what follows (TLS
/// to the real origin, then HTTP) runs inside the tunnel. Any other answer fails it.
final class ParentProxyTunnel: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let established: EventLoopPromise<Void>
    private let target: String
    private var head: ByteBuffer?
    private var sent = false
    private var done = false
    /// A parent's answer head larger than this is refused.
    private static let maxHeadBytes = 16 * 1024

    init(target: Endpoint, established: EventLoopPromise<Void>) {
        self.target = target.description
        self.established = established
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendConnect(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendConnect(context: context)
        context.fireChannelActive()
    }

    private func sendConnect(context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        var request = context.channel.allocator.buffer(capacity: 64 + 2 * target.utf8.count)
        request.writeString("CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\n")
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else {
            context.fireChannelRead(data)
            return
        }
        var incoming = unwrapInboundIn(data)
        if head == nil { head = incoming } else { head!.writeBuffer(&incoming) }
        guard let bytes = head else { return }
        let view = bytes.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            if bytes.readableBytes > Self.maxHeadBytes { fail(ParentProxyError(status: nil, detail: "answer head too large"), context: context) }
            return
        }
        let statusLine = String(decoding: view[view.startIndex..<(view.firstIndex(of: 13) ?? end.lowerBound)], as: UTF8.self)
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            fail(ParentProxyError(status: nil, detail: "not an HTTP answer: \(statusLine.prefix(80))"), context: context)
            return
        }
        guard status / 100 == 2 else {
            fail(ParentProxyError(status: status, detail: statusLine), context: context)
            return
        }
        done = true
        head = nil
        var rest = bytes
        rest.moveReaderIndex(to: bytes.readerIndex + (end.upperBound - view.startIndex))
        established.succeed(())  // installs TLS and HTTP after this handler
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(ParentProxyError(status: nil, detail: "closed before answering"), context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !done else {
            context.fireErrorCaught(error)
            return
        }
        fail(ParentProxyError(status: nil, detail: "\(error)"), context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !done {
            done = true
            established.fail(ParentProxyError(status: nil, detail: "the connection went away"))
        }
    }

    private func fail(_ error: ParentProxyError, context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        established.fail(error)
        context.close(promise: nil)
    }
}
