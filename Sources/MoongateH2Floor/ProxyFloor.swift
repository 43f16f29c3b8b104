import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// `--proxy ORIGIN_PORT`: the least an HTTP/2 → HTTP/1.1 reverse proxy on SwiftNIO costs per
/// request. No channel per stream, no policy, no checks beyond what swift-nio-http2 does itself:
/// each request's HEADERS takes an idle keep-alive connection to the origin (or dials one), sends
/// `GET path` with the client's `:authority` as Host, reads a `content-length` response and answers
/// the stream with its status, length, type and body. The responses of one event-loop tick leave
/// the client connection in one write, as Moongate's listener does.
final class ProxyFloor: ChannelInboundHandler, FloorClient {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let origin: OriginConnections
    private var context: ChannelHandlerContext?
    private var flushPending = false

    init(origin: OriginConnections) { self.origin = origin }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard case .headers(let request) = frame.payload, request.endStream else { return }
        origin.send(
            FloorExchange(stream: frame.streamID, client: self), path: request.headers.first(name: ":path") ?? "/",
            host: request.headers.first(name: ":authority") ?? "localhost")
    }

    /// Writes a stream's response; the connection is flushed once at the end of this tick.
    func answer(_ stream: HTTP2StreamID, status: String, contentType: String?, body: ByteBuffer?) {
        guard let context else { return }
        var headers = HPACKHeaders([(":status", status), ("content-length", "\(body?.readableBytes ?? 0)")])
        if let contentType { headers.add(name: "content-type", value: contentType) }
        let endStream = (body?.readableBytes ?? 0) == 0
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: headers, endStream: endStream)))), promise: nil)
        if let body, !endStream {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .data(.init(data: .byteBuffer(body), endStream: true)))), promise: nil)
        }
        guard !flushPending else { return }
        flushPending = true
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let floor = loopBound.value
            floor.flushPending = false
            floor.context?.flush()
        }
    }
}

/// What answers a client: an HTTP/2 connection (a stream's response) or an HTTP/1.1 one.
protocol FloorClient: AnyObject {
    func answer(_ stream: HTTP2StreamID, status: String, contentType: String?, body: ByteBuffer?)
}

/// One request in flight on an origin connection.
struct FloorExchange {
    let stream: HTTP2StreamID
    let client: any FloorClient
}

/// The origin, and the event loop's idle keep-alive connections to it.
final class OriginConnections {
    private let address: SocketAddress
    private let eventLoop: any EventLoop
    private var connections: [OriginConnection] = []

    init(_ address: SocketAddress, on eventLoop: any EventLoop) {
        self.address = address
        self.eventLoop = eventLoop
    }

    /// Sends `GET path` with `host` on an idle connection, or on a new one (a 502 when it cannot
    /// be had).
    func send(_ exchange: FloorExchange, path: String, host: String) {
        var head = ByteBufferAllocator().buffer(capacity: 64 + path.utf8.count + host.utf8.count)
        head.writeString("GET \(path) HTTP/1.1\r\nHost: \(host)\r\n\r\n")
        if let connection = connections.popLast() {
            connection.start(exchange, head: head)
            return
        }
        let loopBound = NIOLoopBound((self, exchange, head), eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let (idle, exchange, head) = loopBound.value
                    let connection = OriginConnection(idle: idle)
                    try channel.pipeline.syncOperations.addHandler(connection)
                    connection.start(exchange, head: head)
                }
            }
            .connect(to: address)
            .whenFailure { _ in
                let (_, exchange, _) = loopBound.value
                exchange.client.answer(exchange.stream, status: "502", contentType: nil, body: nil)
            }
    }

    func put(_ connection: OriginConnection) { connections.append(connection) }

    func remove(_ connection: OriginConnection) { connections.removeAll { $0 === connection } }
}

/// An HTTP/1.1 keep-alive connection to the origin that reads `content-length` responses.
final class OriginConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let idle: OriginConnections
    private var context: ChannelHandlerContext?
    private var exchange: FloorExchange?
    private var received: ByteBuffer?
    private var pendingHead: ByteBuffer?

    init(idle: OriginConnections) { self.idle = idle }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let pendingHead {
            self.pendingHead = nil
            context.writeAndFlush(wrapOutboundOut(pendingHead), promise: nil)
        }
    }

    func start(_ exchange: FloorExchange, head: ByteBuffer) {
        self.exchange = exchange
        guard let context else {
            pendingHead = head
            return
        }
        context.writeAndFlush(wrapOutboundOut(head), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if received == nil { received = bytes } else { received!.writeBuffer(&bytes) }
        guard let exchange, let response = received, let parsed = Self.parse(response) else { return }
        received = nil
        self.exchange = nil
        idle.put(self)
        exchange.client.answer(exchange.stream, status: parsed.status, contentType: parsed.contentType, body: parsed.body)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idle.remove(self)
        if let exchange { exchange.client.answer(exchange.stream, status: "502", contentType: nil, body: nil) }
        exchange = nil
    }

    /// A whole response: status, `content-type` and the body of `content-length` bytes, or nil while
    /// bytes are missing. A plain byte scan: this is a floor, not a parser (Moongate's is
    /// `UpstreamResponseParser`).
    static func parse(_ buffer: ByteBuffer) -> (status: String, contentType: String?, body: ByteBuffer)? {
        let found: (headEnd: Int, length: Int, type: Range<Int>?)? = buffer.withUnsafeReadableBytes { bytes in
            var index = 0
            var lineStart = 0
            var length = 0
            var type: Range<Int>?
            while index + 1 < bytes.count {
                guard bytes[index] == 13, bytes[index + 1] == 10 else {
                    index += 1
                    continue
                }
                if index == lineStart { return (index + 2, length, type) }
                if let value = Self.value(of: "content-length: ", in: bytes, line: lineStart..<index) {
                    length = 0
                    for position in value { length = length * 10 + Int(bytes[position] &- 48) }
                } else if let value = Self.value(of: "content-type: ", in: bytes, line: lineStart..<index) {
                    type = value
                }
                index += 2
                lineStart = index
            }
            return nil
        }
        guard let found, buffer.readableBytes - found.headEnd >= found.length,
            let status = buffer.getString(at: buffer.readerIndex + 9, length: 3)
        else { return nil }
        let type = found.type.flatMap { buffer.getString(at: buffer.readerIndex + $0.lowerBound, length: $0.count) }
        let body = buffer.getSlice(at: buffer.readerIndex + found.headEnd, length: found.length) ?? ByteBuffer()
        return (status, type, body)
    }

    /// The value's range when the line starts with `name` (lowercase, with ": "), in any case.
    private static func value(of name: StaticString, in bytes: UnsafeRawBufferPointer, line: Range<Int>) -> Range<Int>? {
        let count = name.utf8CodeUnitCount
        guard line.count > count else { return nil }
        let prefix = UnsafeBufferPointer(start: name.utf8Start, count: count)
        for offset in 0..<count where bytes[line.lowerBound + offset] | 0x20 != prefix[offset] | 0x20 {
            return nil
        }
        return (line.lowerBound + count)..<line.upperBound
    }
}
