// `moongate-tunnel-floor HOST PORT TARGET_HOST TARGET_PORT`: the least a CONNECT terminator built the
// way Moongate is built can cost: SwiftNIO channels on one event loop, the same relay
// (`GlueHandler`), and nothing else: no HTTP parser, no policy, no registry, no timers, no metrics,
// no log. It answers every request head with a 200 and relays to one fixed target, whatever the
// CONNECT line says. Benchmark tool only (scripts/bench/nio-floor.sh runs it in the peer harness),
// so that Moongate's tunnel figures can be read against the floor of its own design.

import MoongateProxy
import NIOCore
import NIOPosix

/// Waits for the end of a request head, dials the fixed target, answers 200 and hands the
/// connection to the relay.
final class FloorConnectHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let target: SocketAddress
    private var head: ByteBuffer?
    private var dialling = false

    init(target: SocketAddress) { self.target = target }

    /// Whether the bytes hold a blank line (`\r\n\r\n`), by a scan of the raw bytes. A generic
    /// `firstRange(of:)` on the buffer's view cost 10–12 µs per tunnel here, which made the floor
    /// look dearer than SwiftNIO is.
    static func endsHead(_ buffer: ByteBuffer) -> Bool {
        buffer.withUnsafeReadableBytes { bytes in
            var index = 3
            while index < bytes.count {
                if bytes[index] == 10, bytes[index - 1] == 13, bytes[index - 2] == 10, bytes[index - 3] == 13 { return true }
                index += 1
            }
            return false
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard !dialling else { return }
        if head == nil { head = bytes } else { head!.writeBuffer(&bytes) }
        guard let head, Self.endsHead(head) else { return }
        dialling = true
        let (clientGlue, upstreamGlue) = GlueHandler.matchedPair()
        let boundGlue = NIOLoopBound(upstreamGlue, eventLoop: context.eventLoop)
        let client = context.channel
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(boundGlue.value) }
            }
            .connect(to: target)
            .assumeIsolated()
            .whenComplete { result in
                guard case .success(let upstream) = result else {
                    client.close(promise: nil)
                    return
                }
                var ok = client.allocator.buffer(capacity: 40)
                ok.writeStaticString("HTTP/1.1 200 Connection established\r\n\r\n")
                client.writeAndFlush(ok, promise: nil)
                do {
                    try client.pipeline.syncOperations.addHandler(clientGlue)
                    client.pipeline.syncOperations.removeHandler(self, promise: nil)
                } catch {
                    client.close(promise: nil)
                    upstream.close(promise: nil)
                    return
                }
                client.closeFuture.whenComplete { _ in upstream.close(promise: nil) }
                upstreamGlue.partnerIsReady()
            }
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 5, let port = Int(arguments[2]), let targetPort = Int(arguments[4]) else {
    print("usage: moongate-tunnel-floor HOST PORT TARGET_HOST TARGET_PORT")
    exit(2)
}
let target = try SocketAddress(ipAddress: arguments[3], port: targetPort)
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.allowRemoteHalfClosure, value: true)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(FloorConnectHandler(target: target))
        }
    }
    .bind(host: arguments[1], port: port)
    .wait()
print("listening on \(server.localAddress!)")
try server.closeFuture.wait()
