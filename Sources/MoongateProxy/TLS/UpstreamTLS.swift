import CoreMetrics
import Metrics
import MoongateConfig
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization

/// TLS toward one cluster: its client context (trust store or CA file, optional client
/// certificate, ALPN) and the name sent in SNI and verified.
final class UpstreamTLS: Sendable {
    let cluster: String
    let settings: ClusterTLSConfig
    let context: NIOSSLContext
    /// The protocol the server must select by ALPN (`h2` for a cluster that speaks HTTP/2: a
    /// connection it answers with `http/1.1`, or without ALPN, fails the handshake check).
    let requiredALPN: String?

    /// Builds the cluster's context. - Throws: ``CertificateProblem`` naming a file that cannot be used.
    init(cluster: String, settings: ClusterTLSConfig, speaks upstream: ClusterProtocol = .http1) throws(CertificateProblem) {
        self.cluster = cluster
        self.settings = settings
        self.requiredALPN = upstream == .http2 ? "h2" : nil
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = settings.minVersion == .tls13 ? .tlsv13 : .tlsv12
        tls.cipherSuites = ListenerTLSConfig.modernCiphers
        tls.applicationProtocols = settings.offeredALPN(for: upstream)
        if settings.insecureSkipVerify {
            tls.certificateVerification = .none
        } else if let ca = settings.caFile {
            tls.trustRoots = .file(ca)
        }
        if let certFile = settings.certificateFile, let keyFile = settings.keyFile {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
            } catch {
                throw CertificateProblem(file: certFile, reason: "not a readable PEM certificate chain (\(error))")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw CertificateProblem(file: keyFile, reason: "not a readable PEM private key (\(error))")
            }
        }
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw CertificateProblem(file: settings.caFile ?? settings.certificateFile ?? "(cluster \(cluster))", reason: "\(error)")
        }
    }

    /// The SNI name for an endpoint: the configured one, else the endpoint's host unless it is an
    /// IP literal (then no SNI, and the certificate is checked against the address).
    func serverName(for endpoint: Endpoint) -> String? {
        if let name = settings.serverName { return name }
        let host = endpoint.host
        if host.contains(":") || host.split(separator: ".").allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) {
            return nil
        }
        return host
    }

    /// Adds the TLS client and a handshake watcher to a new upstream connection (before the HTTP
    /// handler); the watcher's future completes when the handshake has, with the protocol the
    /// server selected by ALPN (nil: none).
    func configure(_ channel: any Channel, endpoint: Endpoint, timeout: TimeAmount, metrics: TLSMetrics) throws -> EventLoopFuture<String?> {
        let handler = try NIOSSLClientHandler(context: context, serverHostname: serverName(for: endpoint))
        let watcher = UpstreamHandshakeWatcher(
            promise: channel.eventLoop.makePromise(), cluster: cluster, timeout: timeout, metrics: metrics, requiredALPN: requiredALPN)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.pipeline.syncOperations.addHandler(watcher)
        return watcher.promise.futureResult
    }
}

/// Why an upstream TLS handshake failed: the short reason (metric label) and the library's words.
struct UpstreamTLSError: Error, CustomStringConvertible {
    let reason: String
    let detail: String
    var description: String { "upstream TLS handshake failed (\(reason)): \(detail)" }
}

/// Completes its promise when the upstream handshake does, or fails it with the reason; then leaves.
final class UpstreamHandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Completed with the protocol the server selected by ALPN (nil: none).
    let promise: EventLoopPromise<String?>
    private let cluster: String
    private let metrics: TLSMetrics
    private let timeout: TimeAmount
    private var timer: Scheduled<Void>?
    private var done = false
    /// A TLS handler to put in front of this one when it joins the pipeline (a tunnel's target,
    /// which is dialled with one handler).
    private var installing: NIOSSLClientHandler?
    private let requiredALPN: String?

    init(
        promise: EventLoopPromise<String?>, cluster: String, timeout: TimeAmount, metrics: TLSMetrics,
        installing: NIOSSLClientHandler? = nil, requiredALPN: String? = nil
    ) {
        self.requiredALPN = requiredALPN
        self.promise = promise
        self.cluster = cluster
        self.timeout = timeout
        self.metrics = metrics
        self.installing = installing
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if let ssl = installing {
            installing = nil
            do {
                try context.pipeline.syncOperations.addHandler(ssl, position: .before(self))
            } catch {
                fail(UpstreamTLSError(reason: "setup", detail: "\(error)"), context: context)
                return
            }
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            let (watcher, context) = bound.value
            watcher.fail(UpstreamTLSError(reason: "timeout", detail: "no handshake within \(watcher.timeout)"), context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let selected) = tls, !done {
            if let requiredALPN, selected != requiredALPN {
                fail(
                    UpstreamTLSError(
                        reason: "alpn", detail: "the upstream selected \(selected.map { "'\($0)'" } ?? "no protocol") by ALPN, not '\(requiredALPN)'"),
                    context: context)
                return
            }
            done = true
            timer?.cancel()
            promise.succeed(selected)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !done else {
            context.fireErrorCaught(error)
            return
        }
        fail(UpstreamTLSError(reason: TLSMetrics.classify(error), detail: "\(error)"), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done { fail(UpstreamTLSError(reason: "closed", detail: "the upstream closed the connection during the handshake"), context: context) }
        context.fireChannelInactive()
    }

    private func fail(_ error: UpstreamTLSError, context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        timer?.cancel()
        metrics.upstreamFailed(cluster: cluster, reason: error.reason)
        promise.fail(error)
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        if !done {
            done = true
            promise.fail(UpstreamTLSError(reason: "closed", detail: "the connection went away during the handshake"))
        }
    }
}
