// `moongate-h2-floor PORT [--channels | --proxy ORIGIN_PORT [--http1 | --tls CERT KEY]]`: the least an
// HTTP/2 server on swift-nio-http2 costs per request. Plain: `NIOHTTP2Handler` with no stream
// multiplexer, and a handler that answers each request's HEADERS with a 1 KiB response on the same
// connection. `--channels`: the same answer from a child channel per stream (swift-nio-http2's
// inline multiplexer, as Moongate's listener used it). `--proxy ORIGIN_PORT`: no local answer, each
// request forwarded over HTTP/1.1 keep-alive to an origin on 127.0.0.1 (``ProxyFloor``): the floor
// under P2 of the peer harness; with `--http1` the clients speak HTTP/1.1 in the clear
// (``HTTP1ProxyFloor``, P1), with `--tls CERT KEY` TLS with ALPN `h2` or `http/1.1` (``TLSFloor``,
// P7 and P8).
// Benchmark tool only (scripts/bench/h2-request-cost, scripts/bench/nio-floor.sh): beside Moongate
// it separates what SwiftNIO, swift-nio-http2 and swift-nio-ssl cost from what Moongate adds.

import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL

/// Answers every request (a HEADERS frame that ends its stream) with `200` and 1 KiB.
final class FloorAnswerer: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let body = ByteBuffer(repeating: UInt8(ascii: "a"), count: 1024)
    private let headers = HPACKHeaders([(":status", "200"), ("content-length", "1024"), ("content-type", "application/octet-stream")])

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard case .headers(let request) = frame.payload, request.endStream else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .headers(.init(headers: headers)))), promise: nil)
        let data = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(body), endStream: true))
        context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: data)), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
}

/// The same answer from a stream's own channel.
final class StreamAnswerer: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let body = ByteBuffer(repeating: UInt8(ascii: "a"), count: 1024)
    private let headers = HPACKHeaders([(":status", "200"), ("content-length", "1024"), ("content-type", "application/octet-stream")])

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .headers(let request) = unwrapInboundIn(data), request.endStream else { return }
        context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(body), endStream: true))), promise: nil)
    }
}

let arguments = CommandLine.arguments
/// How clients reach the proxy floor.
enum ClientSide { case h2c, http1, tls(NIOSSLContext) }
enum FloorMode { case answer, channels, proxy(SocketAddress, ClientSide) }
func usage() -> Never {
    print("usage: moongate-h2-floor PORT [--channels | --proxy ORIGIN_PORT [--http1 | --tls CERT KEY]]")
    exit(2)
}
guard arguments.count >= 2, let port = Int(arguments[1]) else { usage() }
let mode: FloorMode
switch Array(arguments.dropFirst(2)) {
case []: mode = .answer
case ["--channels"]: mode = .channels
case let rest where rest.count >= 2 && rest[0] == "--proxy":
    guard let originPort = Int(rest[1]), let origin = try? SocketAddress(ipAddress: "127.0.0.1", port: originPort) else { usage() }
    switch Array(rest.dropFirst(2)) {
    case []: mode = .proxy(origin, .h2c)
    case ["--http1"]: mode = .proxy(origin, .http1)
    case let tls where tls.count == 3 && tls[0] == "--tls":
        mode = .proxy(origin, .tls(try TLSFloor.context(certificate: tls[1], key: tls[2])))
    default: usage()
    }
default: usage()
}
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
// One thread, so one set of idle origin connections.
let loop = group.next()
let proxyOrigin: NIOLoopBound<OriginConnections>? =
    if case .proxy(let address, _) = mode {
        try loop.submit { NIOLoopBound(OriginConnections(address, on: loop), eventLoop: loop) }.wait()
    } else {
        nil
    }
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            var connection = NIOHTTP2Handler.ConnectionConfiguration()
            connection.initialSettings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: 256)]
            // As on Moongate's listener, which validates requests itself: no second pass by the library.
            connection.headerBlockValidation = .disabled
            switch mode {
            case .answer:
                let codec = NIOHTTP2Handler(mode: .server, connectionConfiguration: connection, streamConfiguration: .init())
                try channel.pipeline.syncOperations.addHandler(codec)
                try channel.pipeline.syncOperations.addHandler(FloorAnswerer())
            case .proxy(_, let clients):
                guard let origin = proxyOrigin?.value else { throw ChannelError.ioOnClosedChannel }
                let install = { (http2: Bool) throws in
                    if http2 {
                        let codec = NIOHTTP2Handler(mode: .server, connectionConfiguration: connection, streamConfiguration: .init())
                        try channel.pipeline.syncOperations.addHandler(codec)
                        try channel.pipeline.syncOperations.addHandler(ProxyFloor(origin: origin))
                    } else {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ProxyFloor(origin: origin))
                    }
                }
                switch clients {
                case .h2c: try install(true)
                case .http1: try install(false)
                case .tls(let context): try TLSFloor.configure(channel, context: context, install: install)
                }
            case .channels:
                _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                    mode: .server, connectionConfiguration: connection, streamConfiguration: .init()
                ) { stream in
                    stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(StreamAnswerer()) }
                }
            }
        }
    }
    .bind(host: "127.0.0.1", port: port).wait()
try server.closeFuture.wait()
