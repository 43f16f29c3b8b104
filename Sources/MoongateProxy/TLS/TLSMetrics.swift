import CoreMetrics
import Metrics
import NIOSSL
import Synchronization

/// The TLS counters: `moongate_tls_handshakes_total{listener,version}` and
/// `moongate_tls_handshake_failures_total{listener,reason}` (reason: `timeout`, `cleartext`,
/// `version`, `cipher`, `certificate`, `alpn`, `handshake`), and
/// `moongate_upstream_tls_failures_total{cluster,reason}` for handshakes toward clusters.
public final class TLSMetrics: Sendable {
    private let counters = Mutex<[String: Counter]>([:])

    /// Creates the counters (the metrics system should be bootstrapped first).
    public init() {}

    func handshakeCompleted(listener: String, version: String) {
        counter("moongate_tls_handshakes_total", [("listener", listener), ("version", version)]).increment()
    }

    func handshakeFailed(listener: String, reason: String) {
        counter("moongate_tls_handshake_failures_total", [("listener", listener), ("reason", reason)]).increment()
    }

    func upstreamFailed(cluster: String, reason: String) {
        counter("moongate_upstream_tls_failures_total", [("cluster", cluster), ("reason", reason)]).increment()
    }

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> Counter {
        var key = label
        for (_, value) in dimensions {
            key += "|"
            key += value
        }
        return counters.withLock { cache in
            if let c = cache[key] { return c }
            let c = Counter(label: label, dimensions: dimensions)
            cache[key] = c
            return c
        }
    }

    /// A short, bounded reason for a failed handshake (for the metric label and the log).
    static func classify(_ error: any Error) -> String {
        let text = "\(error)".uppercased()
        if text.contains("HOSTNAME") { return "hostname" }
        if text.contains("EXPIRED") { return "expired" }
        if text.contains("VERSION") { return "version" }
        if text.contains("CIPHER") { return "cipher" }
        if text.contains("CERTIFICATE") || text.contains("CERT_") { return "certificate" }
        if text.contains("ALPN") || text.contains("APPLICATION_PROTOCOL") { return "alpn" }
        if error is NIOSSLError || text.contains("SSL") { return "handshake" }
        return "connection"
    }
}
