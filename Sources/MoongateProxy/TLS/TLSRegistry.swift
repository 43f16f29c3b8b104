import MoongateConfig
import NIOSSL
import Synchronization

/// The TLS state of a running proxy: the certificates of its TLS listeners (by listener name), the
/// client contexts of its TLS clusters (by cluster name), and the TLS counters.
final class TLSRegistry: Sendable {
    private let listeners = Mutex<[String: ListenerCertificates]>([:])
    private let order = Mutex<[String]>([])
    private let clusters = Mutex<[String: UpstreamTLS]>([:])
    /// TLS toward tunnel targets (`tunnel_tls`): one context that verifies, one that does not.
    private let tunnels = Mutex<(verifying: UpstreamTLS, trusting: UpstreamTLS)?>(nil)
    let metrics = TLSMetrics()

    /// Loads the certificates of every listener with `tls:` and the context of every cluster with
    /// `tls:`. - Throws: ``CertificateProblem`` for the first file that cannot be served.
    func load(_ config: MoongateConfiguration) throws {
        for listener in config.listeners {
            guard let settings = listener.tls, certificates(of: listener.name) == nil else { continue }
            let alpn = TLSServerPipeline.alpnProtocols(for: Set(listener.protocols))
            let certificates = try ListenerCertificates(listener: listener.name, settings: settings, alpn: alpn)
            listeners.withLock { $0[listener.name] = certificates }
            order.withLock { $0.append(listener.name) }
        }
        var verifying = config.tunnelTLS ?? ClusterTLSConfig()
        verifying.insecureSkipVerify = false
        var trusting = verifying
        trusting.insecureSkipVerify = true
        let pair = (try UpstreamTLS(cluster: "tunnel", settings: verifying), try UpstreamTLS(cluster: "tunnel", settings: trusting))
        tunnels.withLock { $0 = pair }
        for cluster in config.clusters {
            guard let settings = cluster.tls else { continue }
            let upstream = try UpstreamTLS(cluster: cluster.name, settings: settings, speaks: cluster.upstreamProtocol)
            clusters.withLock { $0[cluster.name] = upstream }
        }
    }

    func certificates(of listener: String) -> ListenerCertificates? { listeners.withLock { $0[listener] } }

    /// The TLS settings of a cluster, if it has any.
    func upstream(_ cluster: String) -> UpstreamTLS? { clusters.withLock { $0[cluster] } }

    /// The context for TLS toward a tunnel's target (loaded by ``load(_:)``).
    func tunnelContext(verify: Bool) -> NIOSSLContext {
        let pair = tunnels.withLock { $0 }!
        return verify ? pair.verifying.context : pair.trusting.context
    }

    /// Every TLS listener's certificates, in the config's order.
    var all: [ListenerCertificates] {
        let names = order.withLock { $0 }
        return listeners.withLock { map in names.compactMap { map[$0] } }
    }
}
