import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOPosix

/// Dials upstream connections for every codec: a cluster's next endpoint (round robin per loop) or a
/// request's own authority (with the address floor), with the HTTP/1.1 client handlers installed.
/// A name is tried on every address that passes the floor (Happy Eyeballs, ``TargetResolver``).
enum UpstreamDialer {
    /// The status for a failed dial: 403 for the address floor, 503 otherwise (refused, timed out,
    /// unresolvable): never a 200.
    static func failure(_ error: any Error) -> (Int, String) {
        if case DialError.refusedAddress(let host, let cls)? = error as? DialError {
            return (403, "\(host) resolves to a \(cls) address")
        }
        if let tls = error as? UpstreamTLSError { return (502, "upstream TLS failed: \(tls.reason)") }
        if let parent = error as? ParentProxyError { return (502, parent.description) }
        if let tunnel = error as? TunnelTLSError { return (503, "TLS to the target failed: \(tunnel.reason)") }
        return (503, "upstream unreachable")
    }

    /// Connects to a destination on this event loop, with the HTTP client handlers installed.
    static func dial(
        _ destination: UpstreamDestination, runtime: ProxyRuntime, loop: LoopContext, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let key = destination.key
        let settings = loop.policy.settings
        let limits = settings.limits
        let target: Authority
        let connectTimeout: Duration
        let floor: Bool
        switch destination {
        case .cluster(let cluster):
            // TLS, or a parent proxy: the channel is handed over once the tunnel and handshake are up.
            if cluster.config.tls != nil || cluster.config.via != nil {
                return SecureUpstream.dial(cluster, key: key, runtime: runtime, loop: loop, on: eventLoop)
            }
            let endpoint = cluster.config.endpoints[
                loop.nextEndpointIndex(cluster.config.name, count: cluster.config.endpoints.count)]
            target = Authority(host: endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host, port: endpoint.port)
            connectTimeout = cluster.config.connectTimeout
            floor = false
        case .authority(let authority):
            target = authority
            connectTimeout = settings.timeouts.upstreamConnect
            floor = true
        }
        let overload = runtime.overload
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout.timeAmount)
            .channelInitializer { channel in
                overload.track(upstream: channel)
                return channel.eventLoop.makeCompletedFuture {
                    try ConnectionOptions.apply(to: channel)
                    try HTTP1Pipeline.configureUpstream(channel.pipeline.syncOperations, key: key, limits: limits)
                }
            }
        return runtime.resolver.connect(
            bootstrap, to: target, allowed: floor ? settings.allowedAddresses : [], floor: floor,
            timeout: connectTimeout.timeAmount, on: eventLoop)
    }

    /// Dials a tunnel's target (CONNECT terminated here) with `handler` as the connection's only
    /// handler: the address floor for names, no lookup for IP literals (no future in between).
    static func dialTarget(
        _ target: Authority, with handler: some ChannelHandler, runtime: ProxyRuntime, loop: LoopContext,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let settings = loop.policy.settings
        let bound = NIOLoopBound(handler, eventLoop: eventLoop)
        let timeout = settings.timeouts.upstreamConnect.timeAmount
        let overload = runtime.overload
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                overload.track(upstream: channel)
                return channel.eventLoop.makeCompletedFuture {
                    try ConnectionOptions.apply(to: channel)
                    try channel.pipeline.syncOperations.addHandler(bound.value)
                }
            }
        return runtime.resolver.connect(
            bootstrap, to: target, allowed: settings.allowedAddresses, floor: true, timeout: timeout, on: eventLoop)
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
        if case .cluster(let cluster) = destination, cluster.config.upstreamProtocol != .http1 {
            let pool = HTTP2UpstreamPool.pool(on: eventLoop)
            if pool.speaks(cluster) != .http1 {
                // A stream of the cluster's HTTP/2 connection, dressed as an HTTP/1.1 connection
                // (HTTP1OverHTTP2Stream); an `auto` cluster whose server turns out to speak HTTP/1.1
                // gets an HTTP/1.1 connection instead, as will this loop's later requests.
                HTTP2UpstreamPool.openHTTP1Stream(to: cluster, runtime: runtime, on: eventLoop).assumeIsolated().whenComplete { result in
                    switch result {
                    case .success(let handler):
                        pool.learned(.http2, for: cluster)
                        done(.success(handler))
                    case .failure(let error as ALPNChoseHTTP1):
                        runtime.logger.debug("auto cluster speaks HTTP/1.1", metadata: ["cluster": "\(cluster.config.name)", "why": "\(error)"])
                        pool.learned(.http1, for: cluster)
                        connect(destination, runtime: runtime, loop: loop, on: eventLoop, done)
                    case .failure(let error):
                        let (status, reason) = failure(error)
                        done(.failure(Failure(status: status, reason: reason, error: error)))
                    }
                }
                return
            }
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
                if let tls = error as? UpstreamTLSError {
                    runtime.logger.warning(
                        "upstream TLS failed", metadata: ["upstream": "\(destination.key)", "reason": "\(tls.reason)", "error": "\(tls.detail)"])
                } else {
                    runtime.logger.info("upstream unreachable", metadata: ["upstream": "\(destination.key)", "error": "\(error)"])
                }
                done(.failure(Failure(status: status, reason: reason, error: error)))
            }
        }
    }
}

