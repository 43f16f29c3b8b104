import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP2

/// The HTTP/2 server side of a client connection (prior knowledge, h2c): swift-nio-http2's frame
/// codec, flow control and flood guards, and one ``HTTP2StreamHandler`` per stream.
enum HTTP2Pipeline {
    /// The settings Moongate sends, the edge defaults of hardening.md §1.5: 100 concurrent
    /// streams, a 64 KiB stream window (1 MiB for the connection), 16 KiB frames, and a header list
    /// as large as an HTTP/1.1 head may be (`limits.max_header_bytes`), and extended CONNECT.
    static func settings(limits: Limits) -> HTTP2Settings {
        [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
            HTTP2Setting(parameter: .initialWindowSize, value: 65_535),
            HTTP2Setting(parameter: .maxFrameSize, value: 16_384),
            HTTP2Setting(parameter: .maxHeaderListSize, value: limits.maxHeaderBytes),
            // Extended CONNECT (RFC 8441): `:protocol bytestream` is a tunnel like a classic CONNECT.
            HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]
    }

    static func configureServer(_ channel: any Channel, runtime: ProxyRuntime, session: TLSSessionInfo? = nil) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = settings(limits: runtime.loopContext(channel.eventLoop).policy.settings.limits)
        connection.targetWindowSize = 1 << 20
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 65_535
        let remote = channel.remoteAddress
        let client = ClientInfo(ip: remote?.ipAddress ?? "0.0.0.0", port: remote?.port ?? 0, session: session)
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connection, streamConfiguration: stream
        ) { streamChannel in
            streamChannel.eventLoop.makeCompletedFuture {
                let loop = runtime.loopContext(streamChannel.eventLoop)
                try streamChannel.pipeline.syncOperations.addHandler(HTTP2StreamHandler(runtime: runtime, loop: loop, client: client))
            }
        }
        try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionHandler())
    }
}
