import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1
import NIOPosix

/// Everything a connection's handlers share with the other connections of its event loop: the
/// loop's policy instance and its upstream pools. Created lazily on the loop, never touched off it.
final class LoopContext {
    let policy: LoopPolicySlot
    let pools: UpstreamPools
    let sweeper: TunnelSweeper
    /// This loop's HTTP/2 client connections (drained when a reload changes their settings).
    let http2Connections = HTTP2ConnectionSet()
    private var roundRobin: [String: Int] = [:]

    init(eventLoop: any EventLoop, settings: LiveSettings) {
        let pools = UpstreamPools()
        self.pools = pools
        self.policy = LoopPolicySlot(settings: settings, pools: pools)
        self.sweeper = TunnelSweeper(eventLoop: eventLoop)
    }

    /// The next endpoint of a cluster, round robin per loop.
    func nextEndpointIndex(_ cluster: String, count: Int) -> Int {
        let next = roundRobin[cluster, default: -1] &+ 1
        roundRobin[cluster] = next
        return next % max(count, 1)
    }
}

/// The shared, immutable set-up of a running proxy, handed to every connection. `config` is the
/// configuration the process started with: its listeners, admin and threads. What reloads
/// (clusters, limits, timeouts) is read from each loop's ``LoopPolicySlot/settings``.
final class ProxyRuntime: Sendable {
    let config: MoongateConfiguration
    let policy: PolicyHost
    let metrics: ProxyMetrics
    let logger: Logger
    let accessLogger: Logger
    let resolver: TargetResolver
    let tunnels: TunnelRegistry
    /// Refuses requests while Moongate is overloaded.
    let overload: OverloadGuard
    /// Listener certificates and cluster TLS contexts (loaded when the server starts).
    let tls = TLSRegistry()
    private let loops: [ObjectIdentifier: NIOLoopBoundBox<LoopContext?>]

    init(
        config: MoongateConfiguration, policy: PolicyHost, metrics: ProxyMetrics, logger: Logger,
        group: any EventLoopGroup, threadPool: NIOThreadPool, overload: OverloadGuard
    ) {
        self.overload = overload
        self.config = config
        self.policy = policy
        self.metrics = metrics
        self.logger = logger
        var access = Logger(label: "moongate.access")
        access.logLevel = logger.logLevel
        self.accessLogger = access
        self.resolver = TargetResolver(threadPool: threadPool, config: config.resolver)
        self.tunnels = TunnelRegistry()
        var loops: [ObjectIdentifier: NIOLoopBoundBox<LoopContext?>] = [:]
        for loop in group.makeIterator() {
            loops[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeEmptyBox(valueType: LoopContext.self, eventLoop: loop)
        }
        self.loops = loops
    }

    /// A reload changed the config: HTTP/2 client connections opened with other settings drain
    /// (GOAWAY, then close once their streams are done), on each loop.
    func configReloaded(_ config: MoongateConfiguration) {
        let settings = HTTP2Pipeline.settings(config.http2, limits: config.limits)
        for (_, box) in loops {
            box.eventLoop.execute { box.value?.http2Connections.settingsChanged(to: settings) }
        }
    }

    /// The calling loop's context (call on the loop).
    func loopContext(_ loop: any EventLoop) -> LoopContext {
        guard let box = loops[ObjectIdentifier(loop)] else {
            preconditionFailure("event loop not part of the proxy's group")
        }
        if let context = box.value { return context }
        let context = LoopContext(eventLoop: loop, settings: policy.liveSettings ?? LiveSettings(config))
        box.value = context
        return context
    }
}
