import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP2
import NIOPosix
import Synchronization

/// The HTTP/2 upstream connections of one event loop, by cluster: requests are streams multiplexed
/// over one connection per endpoint; a connection takes new streams while it has room under the
/// peer's SETTINGS_MAX_CONCURRENT_STREAMS and has not sent GOAWAY, and a new one is dialled when
/// none has. Touched only on its loop.
final class HTTP2UpstreamPool {
    private var byCluster: [String: [HTTP2UpstreamConnection]] = [:]
    private var nextEndpoint: [String: Int] = [:]
    /// What each `auto` cluster's servers chose by ALPN on this loop, by pool key.
    private var chosen: [String: ClusterProtocol] = [:]
    let eventLoop: any EventLoop

    private init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    private static let pools = Mutex<[ObjectIdentifier: NIOLoopBound<HTTP2UpstreamPool>]>([:])

    /// This loop's pool (made on first use; looked up once per client connection).
    static func pool(on eventLoop: any EventLoop) -> HTTP2UpstreamPool {
        let key = ObjectIdentifier(eventLoop)
        return pools.withLock { pools in
            if let pool = pools[key] { return pool.value }
            let pool = HTTP2UpstreamPool(eventLoop: eventLoop)
            pools[key] = NIOLoopBound(pool, eventLoop: eventLoop)
            return pool
        }
    }

    /// The protocol requests to `cluster` use on this loop: its `protocol`, or for `auto` what its
    /// server chose by ALPN (nil until a first connection has told).
    func speaks(_ cluster: ClusterTarget) -> ClusterProtocol? {
        let configured = cluster.config.upstreamProtocol
        return configured == .auto ? chosen[cluster.poolKey] : configured
    }

    /// An `auto` cluster's server chose `upstream` by ALPN.
    func learned(_ upstream: ClusterProtocol, for cluster: ClusterTarget) {
        guard cluster.config.upstreamProtocol == .auto else { return }
        chosen[cluster.poolKey] = upstream
    }

    /// A connection to `cluster` with room for one more stream, reserved for the caller (who
    /// releases it with ``HTTP2UpstreamConnection/streamEnded()``); ``HTTP2UpstreamConnection/ready`` tells when it is up.
    func connection(to cluster: ClusterTarget, runtime: ProxyRuntime) -> HTTP2UpstreamConnection {
        let name = cluster.config.name
        var connections = byCluster[name] ?? []
        connections.removeAll { $0.isClosed }
        if let open = connections.first(where: { $0.hasRoom }) {
            byCluster[name] = connections
            open.reserved += 1
            return open
        }
        let endpoints = cluster.config.endpoints
        let index = (nextEndpoint[name] ?? 0) % endpoints.count
        nextEndpoint[name] = index + 1
        let connection = HTTP2UpstreamConnection(
            endpoint: endpoints[index], secure: cluster.config.tls != nil, eventLoop: eventLoop, logger: runtime.logger)
        connection.reserved = 1
        connections.append(connection)
        byCluster[name] = connections
        connection.dial(cluster, runtime: runtime)
        return connection
    }
}

/// One HTTP/2 connection to an upstream endpoint (prior knowledge), and what its peer said about
/// it: how many streams it takes at once, and whether it is going away.
final class HTTP2UpstreamConnection {
    let endpoint: Endpoint
    /// `https` for a connection over TLS, else `http` (the `:scheme` of its streams).
    let scheme: String
    private let readyPromise: EventLoopPromise<Void>
    private let logger: Logger
    private(set) var multiplexer: NIOHTTP2Handler.StreamMultiplexer?
    private(set) var channel: (any Channel)?
    /// Streams open or promised to callers.
    var reserved = 0
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 until its SETTINGS say otherwise).
    var maxConcurrentStreams = 100
    /// Set by the peer's GOAWAY: streams above it were not processed and may be retried.
    private(set) var goAwayLastStreamID: HTTP2StreamID?
    private(set) var isClosed = false
    private var settingsSeen = false
    /// The peer accepts extended CONNECT (RFC 8441: SETTINGS_ENABLE_CONNECT_PROTOCOL).
    private(set) var extendedConnect = false

    init(endpoint: Endpoint, secure: Bool, eventLoop: any EventLoop, logger: Logger) {
        self.endpoint = endpoint
        self.scheme = secure ? "https" : "http"
        self.readyPromise = eventLoop.makePromise()
        self.logger = logger
    }

    /// Succeeds once the connection is up and the peer's SETTINGS are in (so its stream limit is
    /// known); at once for a connection already there.
    var ready: EventLoopFuture<Void> { readyPromise.futureResult }

    var hasRoom: Bool { !isClosed && goAwayLastStreamID == nil && reserved < maxConcurrentStreams }

    /// A stream of this connection ended (or its reservation was not used).
    func streamEnded() { reserved -= 1 }

    /// Connects to this connection's endpoint of `cluster`: TLS with ALPN `h2` when the cluster has
    /// `tls:`, through its parent proxy when it has `via:` (``SecureUpstream``), else cleartext with
    /// prior knowledge.
    func dial(_ cluster: ClusterTarget, runtime: ProxyRuntime) {
        let eventLoop = readyPromise.futureResult.eventLoop
        let watcher = NIOLoopBound(HTTP2UpstreamRootHandler(connection: self), eventLoop: eventLoop)
        let auto = cluster.config.upstreamProtocol == .auto
        let installCodec: @Sendable (any Channel, String?) throws -> Void = { channel, alpn in
            // An `auto` cluster's server that did not select h2 speaks HTTP/1.1 (the pool learns it).
            if auto && alpn != "h2" { throw ALPNChoseHTTP1() }
            _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: Self.connectionConfiguration,
                streamConfiguration: .init()
            ) { stream in stream.eventLoop.makeSucceededVoidFuture() }
            try channel.pipeline.syncOperations.addHandler(watcher.value)
        }
        let opened: EventLoopFuture<any Channel>
        if cluster.config.tls != nil || cluster.config.via != nil {
            opened = SecureUpstream.dial(
                cluster, key: cluster.poolKey, runtime: runtime, loop: runtime.loopContext(eventLoop), on: eventLoop,
                endpoint: endpoint, codec: installCodec)
        } else {
            let host = endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host
            let overload = runtime.overload
            let connectTimeout = cluster.config.connectTimeout.timeAmount
            let bootstrap = ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout)
                .channelInitializer { channel in
                    overload.track(upstream: channel)
                    return channel.eventLoop.makeCompletedFuture { try installCodec(channel, nil) }
                }
            opened = runtime.resolver.connect(
                bootstrap, to: Authority(host: host, port: endpoint.port), allowed: [], floor: false, timeout: connectTimeout,
                on: eventLoop)
        }
        let connected = opened.flatMap { channel in
            channel.pipeline.handler(type: NIOHTTP2Handler.self).flatMap { handler in handler.multiplexer }
                .map { (channel, $0) }
        }
        connected.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let (channel, multiplexer)):
                self.channel = channel
                self.multiplexer = multiplexer
                if self.isClosed {
                    self.readyPromise.fail(ChannelError.ioOnClosedChannel)
                } else if self.settingsSeen {
                    self.readyPromise.succeed()
                }
            case .failure(let error):
                self.isClosed = true
                self.readyPromise.fail(error)
            }
        }
    }

    /// swift-nio-http2's client settings: a large receive window (responses flow without waiting
    /// for window updates; back-pressure comes from not reading the stream) and its flood guards.
    static var connectionConfiguration: NIOHTTP2Handler.ConnectionConfiguration {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
            HTTP2Setting(parameter: .initialWindowSize, value: 65_535),
            HTTP2Setting(parameter: .enablePush, value: 0),
        ]
        connection.targetWindowSize = 1 << 20
        return connection
    }

    fileprivate func peerSettings(_ settings: HTTP2Settings) {
        for setting in settings {
            switch setting.parameter {
            case .maxConcurrentStreams: maxConcurrentStreams = setting.value
            case .enableConnectProtocol: extendedConnect = setting.value == 1
            default: break
            }
        }
        if !settingsSeen {
            settingsSeen = true
            if multiplexer != nil { readyPromise.succeed() }
        }
    }

    fileprivate func peerGoingAway(lastStreamID: HTTP2StreamID) {
        goAwayLastStreamID = min(goAwayLastStreamID ?? .maxID, lastStreamID)
        logger.debug("upstream sent GOAWAY", metadata: ["endpoint": "\(endpoint)", "last_stream": "\(lastStreamID)"])
    }

    fileprivate func closed() {
        isClosed = true
        // While the dial is under way its own failure (a TLS or parent proxy reason) tells why.
        if multiplexer != nil { readyPromise.fail(ChannelError.ioOnClosedChannel) }  // no effect once succeeded
    }

    /// Whether a caller who reserved a stream while the connection was being set up may use it: more
    /// callers may have reserved than the peer's SETTINGS allow. Over the limit, the reservation is
    /// given back (the caller asks the pool again, which dials another connection).
    func keepReservation() -> Bool {
        guard reserved > maxConcurrentStreams || goAwayLastStreamID != nil else { return true }
        reserved -= 1
        return false
    }

    /// Whether a stream that ended without an answer was refused by a GOAWAY (not processed).
    func wasRefusedByGoAway(_ streamID: HTTP2StreamID?) -> Bool {
        guard let last = goAwayLastStreamID, let streamID else { return false }
        return streamID > last
    }
}

/// Watches an upstream connection's stream-0 frames (its SETTINGS and GOAWAY) for the pool.
final class HTTP2UpstreamRootHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    private let connection: HTTP2UpstreamConnection

    init(connection: HTTP2UpstreamConnection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .settings(.settings(let settings)): connection.peerSettings(settings)
        case .goAway(let last, _, _): connection.peerGoingAway(lastStreamID: last)
        default: break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.closed()
        context.close(promise: nil)
    }
}

/// The server of an `auto` cluster did not select `h2` by ALPN: it speaks HTTP/1.1 (the loop's
/// pool remembers, and the request goes over an HTTP/1.1 connection instead).
struct ALPNChoseHTTP1: Error, CustomStringConvertible {
    var description: String { "the upstream did not select h2 by ALPN" }
}
