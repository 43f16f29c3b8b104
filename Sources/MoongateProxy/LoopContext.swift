import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1
import NIOPosix

/// Everything a connection's handlers share with the other connections of its event loop: the
/// loop's policy instance and its upstream pools. Created lazily on the loop, never touched off it.
final class LoopContext {
    let policy = LoopPolicySlot()
    let pools: UpstreamPools
    let sweeper: TunnelSweeper
    private var roundRobin: [String: Int] = [:]

    init(eventLoop: any EventLoop) {
        self.pools = UpstreamPools()
        self.sweeper = TunnelSweeper(eventLoop: eventLoop)
    }

    /// The next endpoint of a cluster, round robin per loop.
    func nextEndpointIndex(_ cluster: String, count: Int) -> Int {
        let next = roundRobin[cluster, default: -1] &+ 1
        roundRobin[cluster] = next
        return next % max(count, 1)
    }
}

/// A configured cluster as the forwarding path uses it: its settings and its pool key.
final class ClusterTarget: Sendable {
    let config: ClusterConfig
    /// The key of its idle connections in each loop's pools.
    let poolKey: String

    init(_ config: ClusterConfig) {
        self.config = config
        self.poolKey = "cluster:\(config.name)"
    }
}

/// The shared, immutable set-up of a running proxy, handed to every connection.
final class ProxyRuntime: Sendable {
    let config: MoongateConfiguration
    let policy: PolicyHost
    let metrics: ProxyMetrics
    let logger: Logger
    let accessLogger: Logger
    let resolver: TargetResolver
    let tunnels: TunnelRegistry
    /// Listener certificates and cluster TLS contexts (loaded when the server starts).
    let tls = TLSRegistry()
    /// Special addresses a target name may resolve to (`policy.allowed_addresses`).
    let allowedAddresses: Set<String>
    /// The per-request timeouts, converted once.
    let requestHeadersTimeout: TimeAmount
    let upstreamResponseTimeout: TimeAmount
    /// The configured clusters by name, each with its pool key made once.
    let clusters: [String: ClusterTarget]
    private let loops: [ObjectIdentifier: NIOLoopBoundBox<LoopContext?>]

    init(
        config: MoongateConfiguration, policy: PolicyHost, metrics: ProxyMetrics, logger: Logger,
        group: any EventLoopGroup, threadPool: NIOThreadPool
    ) {
        self.config = config
        self.policy = policy
        self.metrics = metrics
        self.logger = logger
        var access = Logger(label: "moongate.access")
        access.logLevel = logger.logLevel
        self.accessLogger = access
        self.resolver = TargetResolver(threadPool: threadPool)
        self.tunnels = TunnelRegistry()
        self.allowedAddresses = Set(config.policy.allowedAddresses)
        self.requestHeadersTimeout = config.timeouts.requestHeaders.timeAmount
        self.upstreamResponseTimeout = config.timeouts.upstreamResponse.timeAmount
        self.clusters = Dictionary(config.clusters.map { ($0.name, ClusterTarget($0)) }, uniquingKeysWith: { first, _ in first })
        var loops: [ObjectIdentifier: NIOLoopBoundBox<LoopContext?>] = [:]
        for loop in group.makeIterator() {
            loops[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeEmptyBox(valueType: LoopContext.self, eventLoop: loop)
        }
        self.loops = loops
    }

    /// The calling loop's context (call on the loop).
    func loopContext(_ loop: any EventLoop) -> LoopContext {
        guard let box = loops[ObjectIdentifier(loop)] else {
            preconditionFailure("event loop not part of the proxy's group")
        }
        if let context = box.value { return context }
        let context = LoopContext(eventLoop: loop)
        box.value = context
        return context
    }
}
