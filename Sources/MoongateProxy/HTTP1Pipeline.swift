import Logging
import MoongateConfig
import NIOCore
import NIOHTTP1

/// The HTTP/1.1 handlers of client and upstream connections, named so a tunnel can remove them.
enum HTTP1Pipeline {
    static let decoder = "http-decoder"
    static let proxy = "moongate-proxy"
    static let upstreamEncoder = "upstream-encoder"
    static let upstreamDecoder = "upstream-decoder"

    /// A client connection: the strict request decoder (left-over bytes kept for tunnels), then the
    /// proxy handler, which keeps pipelined requests in order and writes responses as bytes
    /// (``HTTP1Wire``). No lenient parsing flag is on.
    static func configureServer(
        _ pipeline: ChannelPipeline.SynchronousOperations, limits: NIOHTTPDecoderLimitConfiguration,
        handler: HTTP1ProxyHandler
    ) throws {
        try pipeline.addHandler(
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .drop, limitConfiguration: limits)),
            name: decoder)
        try pipeline.addHandler(handler, name: proxy)
    }

    /// An upstream connection: request encoder, response decoder (1xx forwarded, left-over bytes
    /// kept for upgrades), and the upstream handler. No header validator: every value of a
    /// forwarded head was checked where it came from (the strict decoder, or the edit object for
    /// script edits), see ``HTTP1Wire``.
    /// A CONNECT sent to a parent proxy gets ``ConnectResponseDecoder`` instead of NIO's decoder.
    static func configureUpstream(
        _ pipeline: ChannelPipeline.SynchronousOperations, key: String, limits: NIOHTTPDecoderLimitConfiguration,
        connectVia: Bool = false
    ) throws {
        try pipeline.addHandler(HTTPRequestEncoder(), name: upstreamEncoder)
        if connectVia {
            try pipeline.addHandler(ConnectResponseDecoder(), name: upstreamDecoder)
        } else {
            try pipeline.addHandler(
                ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward, limitConfiguration: limits)),
                name: upstreamDecoder)
        }
        try pipeline.addHandler(UpstreamHandler(key: key))
    }

    /// Removes HTTP from an upstream connection that became a tunnel.
    static func removeUpstreamHTTPHandlers(_ pipeline: ChannelPipeline.SynchronousOperations) {
        pipeline.removeHandler(name: upstreamEncoder, promise: nil)
        pipeline.removeHandler(name: upstreamDecoder, promise: nil)
    }
}
