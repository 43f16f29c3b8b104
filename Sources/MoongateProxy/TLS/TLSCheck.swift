import MoongateConfig

/// What `moongate validate` checks of TLS: every listener's certificate pairs and every cluster's
/// (and `tunnel_tls`'s) files load, as they would at start-up.
public enum TLSCheck {
    /// The problems found, each naming its file and reason (empty: all usable).
    public static func problems(_ config: MoongateConfiguration) -> [CertificateProblem] {
        var found: [CertificateProblem] = []
        for listener in config.listeners {
            guard let settings = listener.tls else { continue }
            let alpn = TLSServerPipeline.alpnProtocols(for: Set(listener.protocols))
            for pair in settings.certificates {
                do {
                    _ = try CertificatePair.load(pair, settings: settings, alpn: alpn)
                } catch {
                    found.append(error)
                }
            }
        }
        var upstreams = config.clusters.compactMap { cluster in cluster.tls.map { (cluster.name, $0) } }
        if let tunnel = config.tunnelTLS { upstreams.append(("tunnel_tls", tunnel)) }
        for (name, settings) in upstreams {
            do {
                _ = try UpstreamTLS(cluster: name, settings: settings)
            } catch {
                found.append(error)
            }
        }
        return found
    }
}
