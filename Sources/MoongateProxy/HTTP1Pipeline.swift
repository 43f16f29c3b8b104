import Logging
import MoongateConfig
import NIOCore
import NIOHTTP1

/// The HTTP/1.1 handlers of client and upstream connections, named so a tunnel can remove them.
enum HTTP1Pipeline {
    static let proxy = "moongate-proxy"

    /// Makes (and drops) one of each generic handler the event loops build, on the calling thread,
    /// before any loop accepts. The Swift runtime can crash when two threads instantiate the same
    /// generic type's metadata for the very first time at once (seen here: two loops accepting their
    /// first connections together died in `swift_getTypeByMangledName` for NIO's request decoder,
    /// which the admin server still uses).
    static func instantiateHandlerTypes() {
        _ = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes))
        _ = HTTPResponseEncoder()
        _ = HTTPServerPipelineHandler()
        _ = HTTPServerProtocolErrorHandler()
    }

    /// A client connection: the proxy handler alone. It parses requests in place
    /// (``ClientRequestParser``), keeps pipelined requests in order and writes responses as bytes
    /// (``HTTP1Wire``).
    static func configureServer(_ pipeline: ChannelPipeline.SynchronousOperations, handler: HTTP1ProxyHandler) throws {
        try pipeline.addHandler(handler, name: proxy)
    }

    /// An upstream connection: one handler, which writes requests as bytes and parses responses
    /// itself (``UpstreamResponseParser``: strict, no header copies; it also ends HTTP after a 101 to
    /// an upgrade or a 2xx to a forwarded CONNECT). No header validator: every value of a forwarded
    /// head was checked where it came from (the strict request decoder, or the edit object for
    /// script edits), see ``HTTP1Wire``.
    static func configureUpstream(_ pipeline: ChannelPipeline.SynchronousOperations, key: String, limits: Limits) throws {
        try pipeline.addHandler(UpstreamHandler(key: key, maxHeadBytes: limits.maxHeaderBytes, maxFields: limits.maxHeaderCount))
    }
}
