import Logging
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


    /// Dials a tunnel's target (CONNECT terminated here) with `handler` as the connection's only
    /// handler: the address floor for names, no lookup for IP literals (no future in between).
    static func dialTarget(
        _ target: Authority, with handler: some ChannelHandler, runtime: ProxyRuntime, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let bound = NIOLoopBound(handler, eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(runtime.config.timeouts.upstreamConnect.timeAmount)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(bound.value) }
            }
        if let literal = runtime.resolver.literalAddress(target) { return bootstrap.connect(to: literal) }
        return runtime.resolver.resolve(target, allowed: runtime.allowedAddresses, on: eventLoop)
            .assumeIsolated().flatMap { bootstrap.connect(to: $0) }.nonisolated()
    }

    /// Why a connection for an exchange could not be had: the status the client gets, its reason,
    /// and the error behind it.
    struct Failure: Error {
        let status: Int
        let reason: String
        let error: (any Error)?
    }

    /// Dials `destination` for an exchange and reports its connection's ``UpstreamHandler``, or
    /// the failure the client is answered with (403 for the address floor, 503 when unreachable,
    /// 502 when the connection cannot be set up). Runs `done` on `eventLoop`.
    static func connect(
        _ destination: UpstreamDestination, runtime: ProxyRuntime, loop: LoopContext, on eventLoop: any EventLoop,
        _ done: @escaping (Result<UpstreamHandler, Failure>) -> Void
    ) {
        if case .cluster(let cluster) = destination, cluster.config.upstreamProtocol == .http2 {
            // A stream of the cluster's HTTP/2 connection, dressed as an HTTP/1.1 connection (HTTP1OverHTTP2Stream).
            HTTP2UpstreamPool.openHTTP1Stream(to: cluster, runtime: runtime, on: eventLoop).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let handler): done(.success(handler))
                case .failure(let error): done(.failure(Failure(status: 503, reason: "upstream unreachable", error: error)))
                }
            }
            return
        }
        dial(destination, runtime: runtime, loop: loop, on: eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                guard let handler = try? channel.pipeline.syncOperations.handler(type: UpstreamHandler.self) else {
                    channel.close(promise: nil)
                    done(.failure(Failure(status: 502, reason: "upstream set-up failed", error: nil)))
                    return
                }
                done(.success(handler))
            case .failure(let error):
                let (status, reason) = failure(error)
                runtime.logger.info("upstream unreachable", metadata: ["upstream": "\(destination.key)", "error": "\(error)"])
                done(.failure(Failure(status: status, reason: reason, error: error)))
            }
        }
    }
}

