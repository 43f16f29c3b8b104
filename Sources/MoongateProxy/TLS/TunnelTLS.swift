import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOSSL

/// Why TLS toward a tunnel's target failed (a `503` for the CONNECT).
struct TunnelTLSError: Error, CustomStringConvertible {
    let reason: String
    let detail: String
    var description: String { "TLS to the tunnel target failed (\(reason)): \(detail)" }
}

/// TLS originated by Moongate toward a CONNECT target (`moongate.tunnel{ tls = {...} }`): the
/// client sends cleartext in the tunnel, the target receives it encrypted. The target is dialled
/// with the TLS client and a handshake watcher; the relay's end goes in only once the handshake
/// (and, unless `verify = false`, the certificate check) has passed, so a failure is a 503, never a 200.
enum TunnelTLS {
    static func dial(
        _ target: Authority, tls request: TunnelTLSRequest, then relay: any ChannelHandler, runtime: ProxyRuntime,
        loop: LoopContext, on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        let ssl: NIOSSLClientHandler
        do {
            ssl = try NIOSSLClientHandler(context: runtime.tls.tunnelContext(verify: request.verify), serverHostname: serverName(request, target))
        } catch {
            return eventLoop.makeFailedFuture(TunnelTLSError(reason: "setup", detail: "\(error)"))
        }
        let watcher = UpstreamHandshakeWatcher(
            promise: eventLoop.makePromise(), cluster: "tunnel", timeout: runtime.config.timeouts.tlsHandshake.timeAmount,
            metrics: runtime.tls.metrics, installing: ssl)
        let handshake = watcher.promise
        let relayBox = NIOLoopBound(relay, eventLoop: eventLoop)
        let dialled = UpstreamDialer.dialTarget(target, with: watcher, runtime: runtime, loop: loop, on: eventLoop)
        dialled.whenFailure { handshake.fail($0) }
        return dialled.flatMap { channel in
            handshake.futureResult.flatMapThrowing { _ -> any Channel in
                try channel.pipeline.syncOperations.addHandler(relayBox.value)
                return channel
            }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                if let tls = error as? UpstreamTLSError { throw TunnelTLSError(reason: tls.reason, detail: tls.detail) }
                throw error
            }
        }
    }

    /// Starts TLS toward `target` on a connected channel (a parent proxy's tunnel): the TLS client
    /// and a handshake watcher go in at the end of its pipeline. The future completes once the
    /// handshake has verified.
    static func start(on channel: any Channel, tls request: TunnelTLSRequest, target: Authority, runtime: ProxyRuntime) -> EventLoopFuture<Void> {
        do {
            let ssl = try NIOSSLClientHandler(context: runtime.tls.tunnelContext(verify: request.verify), serverHostname: serverName(request, target))
            let watcher = UpstreamHandshakeWatcher(
                promise: channel.eventLoop.makePromise(), cluster: "tunnel", timeout: runtime.config.timeouts.tlsHandshake.timeAmount,
                metrics: runtime.tls.metrics)
            try channel.pipeline.syncOperations.addHandler(ssl)
            try channel.pipeline.syncOperations.addHandler(watcher)
            return watcher.promise.futureResult.map { _ in }
        } catch {
            return channel.eventLoop.makeFailedFuture(TunnelTLSError(reason: "setup", detail: "\(error)"))
        }
    }

    /// The error a tunnel reports for a failed TLS step (a 503).
    static func tunnelError(_ error: any Error) -> any Error {
        if let tls = error as? UpstreamTLSError { return TunnelTLSError(reason: tls.reason, detail: tls.detail) }
        if error is TunnelTLSError { return error }
        return TunnelTLSError(reason: "closed", detail: "\(error)")
    }

    /// The configured name, else the target's host unless it is an IP literal.
    static func serverName(_ request: TunnelTLSRequest, _ target: Authority) -> String? {
        if let name = request.serverName { return name }
        let host = target.host
        if host.hasPrefix("[") || host.split(separator: ".").allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) { return nil }
        return host
    }
}
