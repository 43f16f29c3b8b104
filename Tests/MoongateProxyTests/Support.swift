#if canImport(Glibc)
import Glibc
#endif
// With some NIO modules in the test target's graph, Clang attributes the socket structs to NIO's
// Linux shim module; importing it keeps their members visible (MemberImportVisibility).
#if canImport(CNIOLinux)
import CNIOLinux
#endif
import Logging
import MoongateConfig
import MoongatePolicy
import MoongateProxy
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// A blocking loopback TCP client for tests (real sockets, bounded by a receive timeout).
final class TestClient {
    private let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw ChannelError.connectPending }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Reads until `marker` has been seen, EOF, or the timeout.
    func read(until marker: String) -> String {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: data, as: UTF8.self).contains(marker) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += chunk[0..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads until EOF or the timeout.
    func readToEnd() -> String { read(until: "\u{0}never\u{0}") }
}

/// A NIO echo server counting its connections.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

/// A NIO HTTP origin that answers every request with `ok <uri>`.
final class OriginHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let body = "ok \(head.uri)"
        let headers = HTTPHeaders([("content-length", String(body.utf8.count))])
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// Counts accepted connections.
final class AcceptCounter: Sendable {
    private let atomic = Atomic<Int>(0)
    func increment() { atomic.add(1, ordering: .relaxed) }
    var value: Int { atomic.load(ordering: .relaxed) }
}

/// Starts a loopback server; `accepted` counts its connections.
func startUpstream(group: any EventLoopGroup, http: Bool, accepted: AcceptCounter) async throws -> (any Channel) {
    try await ServerBootstrap(group: group)
        .childChannelInitializer { channel in
            accepted.increment()
            return channel.eventLoop.makeCompletedFuture {
                if http {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(OriginHandler())
                } else {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
        }
        .bind(host: "127.0.0.1", port: 0).get()
}

/// A proxy in this process on an ephemeral port, with the given plugins and clusters.
func startProxy(group: any EventLoopGroup, pool: NIOThreadPool, yaml: String) async throws -> (ProxyServer, Int) {
    let config = try ConfigLoader.parse(yaml, path: "\(repositoryRoot)/configs/test.yaml")
    let generation = try PolicyGeneration.load(try PolicySpec.read(config.policy), id: 1)
    let policy = PolicyHost(stats: PolicyStats(), logger: Logger(label: "test"))
    policy.publish(generation, config: config)
    let server = ProxyServer(config: config, policy: policy, metrics: ProxyMetrics(), logger: Logger(label: "test"), group: group, threadPool: pool)
    let addresses = try await server.start()
    return (server, addresses[0].port ?? 0)
}
