import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP2

/// The HTTP/2 server side of a client connection (prior knowledge, h2c): swift-nio-http2's frame
/// codec, flow control and flood guards, Moongate's own ``HTTP2FloodGuard``, and one
/// ``HTTP2StreamHandler`` per stream, driven by the ``HTTP2ConnectionHandler`` (no channel per stream).
enum HTTP2Pipeline {
    /// The settings Moongate sends (`http2:` in the config; hardening.md §1.5's edge defaults), and
    /// extended CONNECT unless `extended_connect: false`.
    static func settings(_ http2: HTTP2Config, limits: Limits) -> HTTP2Settings {
        var settings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: http2.maxConcurrentStreams),
            HTTP2Setting(parameter: .initialWindowSize, value: http2.initialStreamWindow),
            HTTP2Setting(parameter: .maxFrameSize, value: http2.maxFrameSize),
            HTTP2Setting(parameter: .maxHeaderListSize, value: http2.maxHeaderListSize ?? limits.maxHeaderBytes),
        ]
        // Extended CONNECT (RFC 8441): `:protocol bytestream` is a tunnel like a classic CONNECT.
        if http2.extendedConnect { settings.append(HTTP2Setting(parameter: .enableConnectProtocol, value: 1)) }
        return settings
    }

    /// swift-nio-http2's own guards, kept at hardening.md §1.5's values and stated here so that a
    /// change of the library's defaults does not loosen them: at most 5 CONTINUATION frames per
    /// header block, one empty DATA frame in a row, 200 resets, 200 stream errors and 200
    /// PING/SETTINGS/PRIORITY frames per 30 s, 200 glitches, 10,000 control frames waiting for a
    /// client that does not read.
    ///
    /// The library's header-block validation is off on the listener: ``HTTP2RequestValidator``
    /// checks every request and trailer block itself (a superset of the library's checks), and what
    /// Moongate sends is built from fields already checked (an upstream's parsed head, script edits
    /// the sandbox validated), lower-cased on the way. Validating each block twice cost about 6% of
    /// an HTTP/2 request's CPU (`scripts/bench/h2-request-cost`).
    static func connectionConfiguration(_ http2: HTTP2Config, advertising settings: HTTP2Settings) -> NIOHTTP2Handler.ConnectionConfiguration {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = settings
        connection.headerBlockValidation = .disabled
        connection.targetWindowSize = http2.initialConnectionWindow
        connection.maximumSequentialContinuationFrames = 5
        connection.maximumSequentialEmptyDataFrames = 1
        connection.maximumBufferedControlFrames = 10_000
        connection.maximumConnectionGlitches = 200
        connection.controlFrameRateLimit.maximumCount = 200
        connection.controlFrameRateLimit.windowLength = .seconds(30)
        return connection
    }

    static func streamConfiguration() -> NIOHTTP2Handler.StreamConfiguration {
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.streamResetFrameRateLimit.maximumCount = 200
        stream.streamResetFrameRateLimit.windowLength = .seconds(30)
        stream.streamErrorRateLimit.maximumCount = 200
        stream.streamErrorRateLimit.windowLength = .seconds(30)
        return stream
    }

    /// The settings, limits and stream idle timeout are the live generation's (a reload's apply
    /// to the connections that open after it).
    static func configureServer(_ channel: any Channel, runtime: ProxyRuntime, session: TLSSessionInfo? = nil) throws {
        let loop = runtime.loopContext(channel.eventLoop)
        _ = runtime.policy.instance(in: loop.policy)
        let settings = loop.policy.settings
        let http2 = settings.http2
        let limits = settings.limits
        let remote = channel.remoteAddress
        let client = ClientInfo(ip: remote?.ipAddress ?? "0.0.0.0", port: remote?.port ?? 0, session: session)
        let guardian = HTTP2FloodGuard()
        let upstreams = HTTP2UpstreamPool.pool(on: channel.eventLoop)
        let idle = settings.timeouts.streamIdle.timeAmount
        let clock = HTTP2StreamClock(
            shortestTimeout: min(idle, settings.timeouts.upstreamResponse.timeAmount), eventLoop: channel.eventLoop)
        let advertised = Self.settings(http2, limits: limits)
        let extendedConnect = http2.extendedConnect
        let connectionHandler = HTTP2ConnectionHandler(
            guardian: guardian, connectionWindow: http2.initialConnectionWindow, streamWindow: http2.initialStreamWindow,
            advertised: advertised, siblings: loop.http2Connections, logger: runtime.logger
        ) { _ in
            HTTP2StreamHandler(
                runtime: runtime, loop: loop, client: client, guardian: guardian, upstreams: upstreams, idleTimeout: idle,
                extendedConnect: extendedConnect, clock: clock)
        }
        // No stream multiplexer: the connection handler drives the streams off the frames.
        let codec = NIOHTTP2Handler(
            mode: .server, connectionConfiguration: connectionConfiguration(http2, advertising: advertised),
            streamConfiguration: streamConfiguration())
        // swift-nio-http2 stops emitting DATA once the socket is not writable: past NIO's default
        // 64 KiB that is one `writev` per four 16 KiB frames for a bulk tunnel stream.
        try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: 128 * 1024, high: 512 * 1024))
        try channel.syncOptions?.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 262_144))
        let coalescer = FlushCoalescer()
        connectionHandler.coalescer = coalescer
        try channel.pipeline.syncOperations.addHandler(coalescer)
        try channel.pipeline.syncOperations.addHandler(codec)
        try channel.pipeline.syncOperations.addHandler(connectionHandler)
    }
}
