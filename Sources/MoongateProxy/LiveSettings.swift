import MoongateConfig
import NIOCore

/// The parts of the configuration that reload with the scripts: clusters, limits, timeouts, HTTP/2
/// settings and the special addresses policy allows. A generation is config + scripts: these settings are published
/// together with the policy generation that was validated against them (one swap), and each event
/// loop switches to both at once, at its next request. A request or tunnel keeps the clusters it was
/// planned with.
///
/// Listeners, the admin listener and the event-loop count are not here: they are fixed at start
/// (``RestartCheck`` refuses a reload that changes them).
final class LiveSettings: Sendable {
    /// The configured clusters by name, each with its pool key made once.
    let clusters: [String: ClusterTarget]
    let limits: Limits
    let timeouts: Timeouts
    /// The settings HTTP/2 connections advertise.
    let http2: HTTP2Config
    /// Special addresses a target name may resolve to (`policy.allowed_addresses`).
    let allowedAddresses: Set<String>
    /// The deadlines of an HTTP/1.1 client connection, converted once.
    let http1Deadlines: HTTP1Deadlines
    /// The pool keys of ``clusters``: idle connections under any other cluster key are stale.
    let clusterPoolKeys: Set<String>

    init(_ config: MoongateConfiguration) {
        let clusters = Dictionary(config.clusters.map { ($0.name, ClusterTarget($0)) }, uniquingKeysWith: { first, _ in first })
        self.clusters = clusters
        self.limits = config.limits
        self.timeouts = config.timeouts
        self.http2 = config.http2
        self.allowedAddresses = Set(config.policy.allowedAddresses)
        self.http1Deadlines = HTTP1Deadlines(config.timeouts)
        self.clusterPoolKeys = Set(clusters.values.map(\.poolKey))
    }
}

/// A configured cluster as the forwarding path uses it: its settings and its pool key.
final class ClusterTarget: Sendable {
    let config: ClusterConfig
    /// The key of its idle connections in each loop's pools. It names the endpoints, so a reload
    /// that moves a cluster never hands out a connection to its old endpoints.
    let poolKey: String

    init(_ config: ClusterConfig) {
        self.config = config
        self.poolKey = "\(ClusterTarget.keyPrefix)\(config.name)=\(config.endpoints.map(\.description).joined(separator: ","))"
    }

    /// Every cluster pool key starts with this (authority keys are `host:port`).
    static let keyPrefix = "cluster:"
}
