import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOPosix

/// Dials a cluster that needs more than a TCP connection before HTTP: TLS to its endpoint, a
/// parent HTTP proxy (`via:`) that is sent `CONNECT endpoint` in the clear first, or both (TLS to
/// the real origin inside the parent's tunnel, in one hop). The channel is handed over only once
/// the tunnel is up and the handshake has verified, so a failure is known before a request is sent.
/// The HTTP codec goes on last, once the handshake is done, told what the server selected by ALPN:
/// HTTP/1.1 by default (refusing a server that selected `h2`), or what `codec` installs (an HTTP/2
/// cluster's, which may refuse `http/1.1` in turn).
enum SecureUpstream {
    static func dial(
        _ target: ClusterTarget, key: String, runtime: ProxyRuntime, loop: LoopContext, on eventLoop: any EventLoop,
        endpoint chosen: Endpoint? = nil, codec: (@Sendable (any Channel, _ alpn: String?) throws -> Void)? = nil
    ) -> EventLoopFuture<any Channel> {
        let cluster = target.config
        let endpoint = chosen ?? cluster.endpoints[loop.nextEndpointIndex(cluster.name, count: cluster.endpoints.count)]
        let settings = loop.policy.settings
        let parent = cluster.via.flatMap { settings.clusters[$0]?.config }
        let hop = parent.map { $0.endpoints[loop.nextEndpointIndex($0.name, count: $0.endpoints.count)] } ?? endpoint
        let connectTimeout = parent?.connectTimeout ?? cluster.connectTimeout
        let tls = cluster.tls != nil ? runtime.tls.upstream(cluster.name) : nil
        let metrics = runtime.tls.metrics
        let timeout = settings.timeouts.tlsHandshake.timeAmount
        let limits = settings.limits
        let overload = runtime.overload
        let ready = eventLoop.makePromise(of: Void.self)
        let installCodec: @Sendable (any Channel, String?) throws -> Void =
            codec ?? { channel, alpn in
                guard alpn != "h2" else {
                    throw UpstreamTLSError(reason: "alpn", detail: "the upstream selected h2 on a connection opened for HTTP/1.1")
                }
                try HTTP1Pipeline.configureUpstream(channel.pipeline.syncOperations, key: key, limits: limits)
            }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout.timeAmount)
            .channelInitializer { channel in
                overload.track(upstream: channel)
                return channel.eventLoop.makeCompletedFuture {
                    try ConnectionOptions.apply(to: channel)
                    guard parent != nil else {
                        if let tls {
                            let handshake = try tls.configure(channel, endpoint: endpoint, timeout: timeout, metrics: metrics)
                            ready.completeWith(handshake.flatMapThrowing { alpn in try installCodec(channel, alpn) })
                        } else {
                            try installCodec(channel, nil)
                            ready.succeed(())
                        }
                        return
                    }
                    let tunnel = ParentProxyTunnel(target: endpoint, established: channel.eventLoop.makePromise())
                    try channel.pipeline.syncOperations.addHandler(tunnel)
                    // Once the parent answered 2xx: TLS (if any) and HTTP inside the tunnel.
                    ready.completeWith(
                        tunnel.established.futureResult.flatMap { _ in
                            do {
                                guard let tls else {
                                    try installCodec(channel, nil)
                                    return channel.eventLoop.makeSucceededVoidFuture()
                                }
                                let handshake = try tls.configure(channel, endpoint: endpoint, timeout: timeout, metrics: metrics)
                                return handshake.flatMapThrowing { alpn in try installCodec(channel, alpn) }
                            } catch {
                                return channel.eventLoop.makeFailedFuture(error)
                            }
                        })
                }
            }
        let connected = runtime.resolver.connect(
            bootstrap, to: Authority(host: hop.host.contains(":") ? "[\(hop.host)]" : hop.host, port: hop.port), allowed: [],
            floor: false, timeout: connectTimeout.timeAmount, on: eventLoop)
        connected.whenFailure { ready.fail($0) }
        return connected.flatMap { channel in
            ready.futureResult.map { channel }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }
        }
    }
}
