import NIOCore
import NIOHTTP2
import NIOPosix

/// `--proxy` over HTTP/1.1 (cleartext for P1 of the peer harness, or the `http/1.1` ALPN choice on
/// the TLS listener for P8h1): the least an HTTP/1.1 reverse proxy on SwiftNIO costs per request.
/// One request at a time per keep-alive connection: the request line's path and the Host header
/// are found by a byte scan (no parser, no checks), the request goes to the origin like
/// ``ProxyFloor``'s, and the answer (status line, `content-length`, `content-type`, body) leaves in
/// one write; after a request with `Connection: close` the connection closes.
final class HTTP1ProxyFloor: ChannelInboundHandler, FloorClient {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let origin: OriginConnections
    private var context: ChannelHandlerContext?
    private var received: ByteBuffer?
    private var inFlight = false
    private var closeAfterAnswer = false

    init(origin: OriginConnections) { self.origin = origin }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if received == nil { received = bytes } else { received!.writeBuffer(&bytes) }
        startNext(context)
    }

    private func startNext(_ context: ChannelHandlerContext) {
        guard !inFlight, var buffer = received, let request = Self.request(in: buffer) else { return }
        buffer.moveReaderIndex(forwardBy: request.headLength)
        received = buffer.readableBytes > 0 ? buffer : nil
        inFlight = true
        closeAfterAnswer = request.close
        origin.send(FloorExchange(stream: .rootStream, client: self), path: request.path, host: request.host)
    }

    func answer(_ stream: HTTP2StreamID, status: String, contentType: String?, body: ByteBuffer?) {
        guard let context else { return }
        inFlight = false
        let length = body?.readableBytes ?? 0
        var out = context.channel.allocator.buffer(capacity: 128 + length)
        out.writeString("HTTP/1.1 \(status) OK\r\ncontent-length: \(length)\r\n")
        if let contentType { out.writeString("content-type: \(contentType)\r\n") }
        out.writeStaticString("\r\n")
        if var body { out.writeBuffer(&body) }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        if closeAfterAnswer {
            context.close(promise: nil)
            return
        }
        startNext(context)
    }

    /// The path and Host of the request head at the start of `buffer`, whether it asks for the
    /// connection to close, and the head's length; nil until the head is complete.
    static func request(in buffer: ByteBuffer) -> (path: String, host: String, close: Bool, headLength: Int)? {
        let found: (path: Range<Int>, host: Range<Int>, close: Bool, end: Int)? = buffer.withUnsafeReadableBytes { bytes in
            var path = 0..<0
            var host = 0..<0
            var close = false
            var lineStart = 0
            var index = 0
            while index + 1 < bytes.count {
                guard bytes[index] == 13, bytes[index + 1] == 10 else {
                    index += 1
                    continue
                }
                if index == lineStart { return (path, host, close, index + 2) }
                if lineStart == 0 {
                    // The request line: METHOD SP path SP version.
                    var first = 0
                    while first < index, bytes[first] != 32 { first += 1 }
                    var second = first + 1
                    while second < index, bytes[second] != 32 { second += 1 }
                    path = min(first + 1, index)..<min(second, index)
                } else if index - lineStart > 5, bytes[lineStart] | 0x20 == 104, bytes[lineStart + 1] | 0x20 == 111,
                    bytes[lineStart + 2] | 0x20 == 115, bytes[lineStart + 3] | 0x20 == 116, bytes[lineStart + 4] == 58
                {
                    var start = lineStart + 5
                    while start < index, bytes[start] == 32 { start += 1 }
                    host = start..<index
                } else if index - lineStart >= 16, bytes[lineStart] | 0x20 == 99, bytes[lineStart + 10] == 58,
                    bytes[index - 5] | 0x20 == 99, bytes[index - 4] | 0x20 == 108, bytes[index - 3] | 0x20 == 111,
                    bytes[index - 2] | 0x20 == 115, bytes[index - 1] | 0x20 == 101
                {
                    // `Connection: ... close` (a floor: the first letter, the colon and the last word).
                    close = true
                }
                index += 2
                lineStart = index
            }
            return nil
        }
        guard let found else { return nil }
        let base = buffer.readerIndex
        let path = buffer.getString(at: base + found.path.lowerBound, length: found.path.count) ?? "/"
        let host = buffer.getString(at: base + found.host.lowerBound, length: found.host.count) ?? "localhost"
        return (path.isEmpty ? "/" : path, host.isEmpty ? "localhost" : host, found.close, found.end)
    }
}
