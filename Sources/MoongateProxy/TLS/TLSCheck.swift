#if canImport(Glibc)
import Glibc
#endif
import MoongateConfig

/// What `moongate validate` checks of TLS: every listener's certificate pairs and every cluster's
/// (and `tunnel_tls`'s) files load, as they would at start-up. Files that do not exist yet are told
/// apart (certificates are often mounted only where the proxy runs).
public enum TLSCheck {
    /// The files found and unusable (each with its reason), and the files not found.
    public static func problems(_ config: MoongateConfiguration) -> (unusable: [CertificateProblem], missing: [String]) {
        var unusable: [CertificateProblem] = []
        var missing: [String] = []
        func present(_ files: [String?]) -> Bool {
            let absent = files.compactMap { $0 }.filter { access($0, F_OK) != 0 }
            missing += absent
            return absent.isEmpty
        }
        for listener in config.listeners {
            guard let settings = listener.tls else { continue }
            let alpn = TLSServerPipeline.alpnProtocols(for: Set(listener.protocols))
            for pair in settings.certificates where present([pair.certificateFile, pair.keyFile, settings.clientCA]) {
                do {
                    _ = try CertificatePair.load(pair, settings: settings, alpn: alpn)
                } catch {
                    unusable.append(error)
                }
            }
        }
        var upstreams = config.clusters.compactMap { cluster in cluster.tls.map { (cluster.name, $0) } }
        if let tunnel = config.tunnelTLS { upstreams.append(("tunnel_tls", tunnel)) }
        for (name, settings) in upstreams where present([settings.caFile, settings.certificateFile, settings.keyFile]) {
            do {
                _ = try UpstreamTLS(cluster: name, settings: settings)
            } catch {
                unusable.append(error)
            }
        }
        return (unusable, Array(Set(missing)).sorted())
    }
}
