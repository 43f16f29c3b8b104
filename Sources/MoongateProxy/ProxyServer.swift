import Logging
import MoongateConfig
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The proxy's listeners as a `Service`: binds every listener of the config, serves until graceful
/// shutdown, then stops accepting, lets in-flight requests finish up to the drain deadline, and
/// closes what is left (tunnels included).
public final class ProxyServer: Service, Sendable {
    private let runtime: ProxyRuntime
    private let group: any EventLoopGroup
    private let serverChannels = Mutex<[any Channel]>([])
    private let connections: ConnectionRegistry
    private let overloadWatch = Mutex<Task<Void, Never>?>(nil)
    /// The overload guard (`overload:` in the config); the admin listener reports it.
    public let overload: OverloadGuard

    /// Creates the server; nothing is bound until ``start()`` or ``run()``.
    /// - Parameter threadPool: the threads that run name lookups (`resolver.threads` of them).
    public init(
        config: MoongateConfiguration, policy: PolicyHost, metrics: ProxyMetrics, logger: Logger,
        group: any EventLoopGroup, threadPool: NIOThreadPool
    ) {
        let connections = ConnectionRegistry()
        let overload = OverloadGuard(
            config: config.overload, clients: connections, metrics: metrics, logger: Logger(label: "moongate.overload"))
        self.runtime = ProxyRuntime(
            config: config, policy: policy, metrics: metrics, logger: logger, group: group, threadPool: threadPool,
            overload: overload)
        self.group = group
        self.connections = connections
        self.overload = overload
    }

    /// A reload loaded `config` (called by the reloader after it went live).
    public func configReloaded(_ config: MoongateConfiguration) {
        overload.apply(config.overload)
        runtime.configReloaded(config)
    }

    /// Binds every listener.
    /// - Returns: the bound addresses, in the config's order (port 0 binds an ephemeral port).
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        HTTP1Pipeline.instantiateHandlerTypes()
        try runtime.tls.load(runtime.config)
        var bound: [SocketAddress] = []
        for listener in runtime.config.listeners {
            let channel = try await bootstrap(for: listener).bind(host: listener.address, port: listener.port).get()
            serverChannels.withLock { $0.append(channel) }
            if let address = channel.localAddress { bound.append(address) }
            runtime.logger.info("listening", metadata: ["listener": "\(listener.name)", "address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        }
        let overload = self.overload
        overloadWatch.withLock { $0 = Task.detached { await overload.watch() } }
        return bound
    }

    public func run() async throws {
        if serverChannels.withLock({ $0.isEmpty }) { try await start() }
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops accepting, drains, and closes everything.
    public func shutdown() async {
        let listeners = serverChannels.withLock { channels in
            defer { channels = [] }
            return channels
        }
        for channel in listeners { try? await channel.close() }
        overloadWatch.withLock { $0?.cancel() }
        connections.quiesceAll()
        let deadline = ContinuousClock.now + runtime.config.timeouts.drain
        while connections.count - runtime.tunnels.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        runtime.tunnels.closeAll()
        connections.closeAll()
        runtime.logger.info("stopped")
    }

    /// The certificates of the TLS listeners (loaded by ``start()``), for the reloader and admin.
    public var certificates: [ListenerCertificates] { runtime.tls.all }

    private func bootstrap(for listener: ListenerConfig) -> ServerBootstrap {
        let runtime = self.runtime
        let connections = self.connections
        let protocols = Set(listener.protocols)
        let certificates = runtime.tls.certificates(of: listener.name)
        let tlsMetrics = runtime.tls.metrics
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard connections.count < runtime.loopContext(channel.eventLoop).policy.settings.limits.maxConnections else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    try ConnectionOptions.apply(to: channel, maxMessagesPerRead: 16)
                    runtime.overload.connectionsChanged(connections.opened(channel))
                    channel.closeFuture.whenComplete { _ in runtime.overload.connectionsChanged(connections.closed(channel)) }
                    let loop = runtime.loopContext(channel.eventLoop)
                    if let certificates {
                        try TLSServerPipeline.configure(channel, certificates: certificates, runtime: runtime, metrics: tlsMetrics) { http2, session in
                            try channel.pipeline.syncOperations.addHandler(TLSRecordGatherer())
                            if http2 || !protocols.contains(.http1) {
                                try HTTP2Pipeline.configureServer(channel, runtime: runtime, session: session)
                            } else {
                                try HTTP1Pipeline.configureServer(channel.pipeline.syncOperations, handler: HTTP1ProxyHandler(runtime: runtime, loop: loop, session: session))
                            }
                        }
                        return
                    }
                    switch (protocols.contains(.http1), protocols.contains(.http2)) {
                    case (true, true):
                        try channel.pipeline.syncOperations.addHandler(PrefaceSniffer { http2, pipeline in
                            if http2 {
                                try HTTP2Pipeline.configureServer(channel, runtime: runtime)
                            } else {
                                try HTTP1Pipeline.configureServer(pipeline, handler: HTTP1ProxyHandler(runtime: runtime, loop: loop))
                            }
                        })
                    case (false, true):
                        try HTTP2Pipeline.configureServer(channel, runtime: runtime)
                    default:
                        let handler = HTTP1ProxyHandler(runtime: runtime, loop: loop)
                        try HTTP1Pipeline.configureServer(channel.pipeline.syncOperations, handler: handler)
                    }
                }
            }
    }
}

/// The open client connections (for graceful shutdown and the overload guard).
final class ConnectionRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    var count: Int { channels.withLock { $0.count } }

    /// - Returns: the number of open connections.
    @discardableResult
    func opened(_ channel: any Channel) -> Int {
        channels.withLock {
            $0[ObjectIdentifier(channel)] = channel
            return $0.count
        }
    }

    /// - Returns: the number of open connections.
    @discardableResult
    func closed(_ channel: any Channel) -> Int {
        channels.withLock {
            $0.removeValue(forKey: ObjectIdentifier(channel))
            return $0.count
        }
    }

    /// The open connections now.
    func snapshot() -> [any Channel] { channels.withLock { Array($0.values) } }

    /// Asks every connection to finish its in-flight request and close.
    func quiesceAll() {
        for channel in channels.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    func closeAll() {
        for channel in channels.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }
}
