/// Moongate's whole static configuration: listeners, clusters, policy plugins, admin, limits and
/// timeouts. Policy itself lives in Lua; this says which scripts run and with what settings.
public struct MoongateConfiguration: Sendable {
    /// The file this configuration came from.
    public var sourcePath: String
    public var listeners: [ListenerConfig]
    public var clusters: [ClusterConfig]
    public var policy: PolicyConfig
    public var admin: AdminConfig?
    public var limits: Limits
    public var timeouts: Timeouts
    /// The settings HTTP/2 listeners advertise (`http2:`).
    public var http2 = HTTP2Config()
    /// Event-loop threads (0 = one per core).
    public var eventLoopThreads: Int
    public var resolver = ResolverConfig()
    public var overload = OverloadConfig()
    /// TLS that Moongate originates toward tunnel targets (`tunnel_tls`: CA file, client certificate).
    public var tunnelTLS: ClusterTLSConfig? = nil

    /// The cluster with this name.
    public func cluster(named name: String) -> ClusterConfig? { clusters.first { $0.name == name } }
}

/// A protocol a listener speaks.
public enum ListenerProtocol: String, Sendable, CaseIterable {
    case http1
    /// HTTP/2 with prior knowledge (h2c); with `http1` on the same listener, the connection
    /// preface tells them apart.
    case http2
}

/// One listening socket.
public struct ListenerConfig: Sendable, Equatable {
    public var name: String
    public var address: String
    public var port: Int
    public var protocols: [ListenerProtocol]
    /// TLS on this listener (nil: cleartext); ALPN then chooses among `protocols`.
    public var tls: ListenerTLSConfig? = nil
}

/// A host and port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// An upstream cluster: where routed requests and proxied CONNECTs go.
public struct ClusterConfig: Sendable {
    public var name: String
    public var endpoints: [Endpoint]
    public var connectTimeout: Duration
    /// Idle keep-alive connections kept per event loop.
    public var poolSize: Int
    /// TLS toward the endpoints (nil: cleartext).
    public var tls: ClusterTLSConfig? = nil
    /// A parent HTTP proxy (another cluster) that the endpoints are reached through: Moongate sends
    /// it `CONNECT endpoint` in the clear, then speaks (TLS and) HTTP inside the tunnel.
    public var via: String? = nil
    /// The protocol spoken to the endpoints (`protocol:`, default http1).
    public var upstreamProtocol: ClusterProtocol = .http1
}

/// The admin listener (readiness, policy state, metrics, reload).
public struct AdminConfig: Sendable, Equatable {
    public var address: String
    public var port: Int
}

/// One plugin of the policy, with its resolved file and its config.
public struct PluginConfig: Sendable {
    public var name: String
    /// The absolute or config-relative path of the script, resolved.
    public var file: String
    /// Lower runs first.
    public var priority: Int
    public var config: ConfigValue
    /// This plugin's own `hook_deadline` (nil: the policy's).
    public var hookDeadline: Duration? = nil
}

/// Which scripts decide, and the limits they run under.
public struct PolicyConfig: Sendable {
    public var plugins: [PluginConfig]
    public var memoryCap: Int
    public var instructionBudget: Int
    /// How long one hook call may hold its event loop, in Lua or in any library function it calls
    /// (`policy.hook_deadline`, 10 ms); a plugin may set its own.
    public var hookDeadline: Duration = .milliseconds(10)
    /// How long a plugin's module body and `init` may run while a generation loads
    /// (`policy.init_deadline`, 1 s).
    public var initDeadline: Duration = .seconds(1)
    /// Reload when a script or this file changes.
    public var watch: Bool
    /// JSONL files of recorded requests with expected decisions, replayed before a generation goes live.
    public var fixtures: [String]
    /// Special addresses (loopback, private, ...) that a tunnel or forward target's *name* may
    /// resolve to. Names resolving only to other special addresses are refused (403).
    public var allowedAddresses: [String] = []
    /// The names of the configured clusters (``MoongateConfiguration/clusters``), which policy
    /// checks the clusters scripts name against. Empty: unknown, nothing is checked.
    public var clusterNames: [String] = []
    /// The config file's folder: relative paths in plugin configs (`users_file`) resolve against it.
    public var folder: String = "."
}

/// Size and count limits (the edge defaults of hardening.md §1.5).
public struct Limits: Sendable {
    public var maxHeaderBytes = 60 * 1024
    public var maxHeaderCount = 100
    public var maxRequestLineBytes = 8 * 1024
    /// One request field line (name, colon, value); a longer one gets 431.
    public var maxHeaderFieldBytes = 8 * 1024
    public var maxConnections = 10_000
    public var maxTunnels = 5_000
    /// Open tunnels (CONNECT and upgrades) per client address (hardening.md §C.12: descriptors
    /// cannot be exhausted from one address). 1,000 leaves room for clients behind a NAT.
    public var maxTunnelsPerClient = 1_000
    public init() {}
}

/// Timers (the edge defaults of hardening.md §1.5).
public struct Timeouts: Sendable {
    public var requestHeaders: Duration = .seconds(10)
    public var streamIdle: Duration = .seconds(300)
    public var upstreamConnect: Duration = .seconds(5)
    public var upstreamResponse: Duration = .seconds(15)
    public var tunnelIdle: Duration = .seconds(300)
    public var tunnelMaxDuration: Duration? = nil
    public var drain: Duration = .seconds(30)
    /// The request body, keep-alive and slow-reader deadlines of client connections.
    public var client = ClientTimeouts()
    /// How long a TLS client may take to complete its handshake (`timeouts.tls_handshake`).
    public var tlsHandshake: Duration = .seconds(10)
    public init() {}
}
