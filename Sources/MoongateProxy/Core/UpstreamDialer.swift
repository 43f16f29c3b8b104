import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOPosix

/// Dials upstream connections for every codec: a cluster's next endpoint (round robin per loop) or a
/// request's own authority (with the address floor), with the HTTP/1.1 client handlers installed.
enum UpstreamDialer {
    /// The status for a failed dial: 403 for the address floor, 503 otherwise (refused, timed out,
    /// unresolvable): never a 200.
    static func failure(_ error: any Error) -> (Int, String) {
        if case DialError.refusedAddress(let host, let cls)? = error as? DialError {
            return (403, "\(host) resolves to a \(cls) address")
        }
        return (503, "upstream unreachable")
    }

    /// Connects to a destination on this event loop, with the HTTP client handlers installed.
    static func dial(
        _ destination: UpstreamDestination, runtime: ProxyRuntime, loop: LoopContext, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let key = destination.key
        let address: EventLoopFuture<SocketAddress>
        let connectTimeout: Duration
        switch destination {
        case .cluster(let target):
            let cluster = target.config
            let endpoint = cluster.endpoints[loop.nextEndpointIndex(cluster.name, count: cluster.endpoints.count)]
            connectTimeout = cluster.connectTimeout
            address = runtime.resolver.resolve(
                Authority(host: endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host, port: endpoint.port),
                allowed: [], on: eventLoop, floor: false)
        case .authority(let authority):
            connectTimeout = runtime.config.timeouts.upstreamConnect
            address = runtime.resolver.resolve(authority, allowed: runtime.allowedAddresses, on: eventLoop, floor: true)
        }
        let limits = runtime.config.limits
        return address.flatMap { address in
            ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout.timeAmount)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try HTTP1Pipeline.configureUpstream(channel.pipeline.syncOperations, key: key, limits: limits)
                    }
                }
                .connect(to: address)
        }
    }

}
