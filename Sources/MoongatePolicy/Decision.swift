import LuaKit

/// A script fault: the request fails closed with a 500 and nothing is forwarded.
public struct PolicyFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// The plugin whose hook failed.
    public let plugin: String
    /// The hook: `route`, `connect`, `sanitize_request`, …
    public let hook: String
    /// Runtime error, budget, memory cap or invalid return.
    public let kind: LuaError.Kind
    /// Lua's message with the script's file and line.
    public let message: String

    /// Creates a fault.
    public init(plugin: String, hook: String, kind: LuaError.Kind, message: String) {
        self.plugin = plugin
        self.hook = hook
        self.kind = kind
        self.message = message
    }

    public var description: String { "plugin \(plugin), hook \(hook) (\(kind)): \(message)" }
}

/// What policy decided for a request.
public enum Decision: Hashable, Sendable {
    /// No plugin had an opinion (only seen from a single hook; composition always decides).
    case noOpinion
    /// Send the request to a cluster.
    case route(cluster: String)
    /// Send the request to its own authority (forward proxying).
    case forward
    /// Terminate the CONNECT here: dial the target, answer 200, relay bytes.
    case tunnel
    /// Send the CONNECT on to a cluster (an upstream proxy) that terminates it.
    case tunnelVia(cluster: String)
    /// Refuse with a status (4xx/5xx), an optional reason and response headers.
    case deny(status: Int, reason: String?, headers: [HeaderField])
    /// Answer locally with a status, an optional body and headers.
    case respond(status: Int, body: String?, headers: [HeaderField])
    /// A script fault: answered with 500.
    case fault(PolicyFault)

    /// The verb as scripts write it.
    public var verb: String {
        switch self {
        case .noOpinion: "none"
        case .route: "route"
        case .forward: "forward"
        case .tunnel: "tunnel"
        case .tunnelVia: "tunnel_via"
        case .deny: "deny"
        case .respond: "respond"
        case .fault: "fault"
        }
    }

    /// True when the request goes on (route, forward, tunnel, tunnel_via): for a CONNECT or an
    /// upgrade, a tunnel is about to open.
    public var admits: Bool {
        switch self {
        case .route, .forward, .tunnel, .tunnelVia: true
        case .noOpinion, .deny, .respond, .fault: false
        }
    }

    /// The status a client sees when policy answers locally (deny, respond, fault).
    public var localStatus: Int? {
        switch self {
        case .deny(let status, _, _), .respond(let status, _, _): status
        case .fault: 500
        default: nil
        }
    }

    /// One-line form, also the `expect` syntax of tests and fixtures: `route origin`, `forward`,
    /// `tunnel`, `tunnel_via parent`, `deny 403`, `respond 407`, `fault`, `none`.
    public var summary: String {
        switch self {
        case .route(let cluster): "route \(cluster)"
        case .tunnelVia(let cluster): "tunnel_via \(cluster)"
        case .deny(let status, _, _): "deny \(status)"
        case .respond(let status, _, _): "respond \(status)"
        default: verb
        }
    }

    /// True when `expectation` (the `summary` syntax; `deny` alone matches any deny status)
    /// describes this decision.
    public func matches(_ expectation: String) -> Bool {
        let e = expectation.trimmingSpaces
        if e == summary { return true }
        if e == "nil" { return self == .noOpinion }
        return !e.contains(" ") && e == verb
    }
}

/// A decision and the plugin that made it (nil for the built-in defaults).
public struct PolicyOutcome: Hashable, Sendable, CustomStringConvertible {
    public let decision: Decision
    public let plugin: String?
    /// For a tunnel (or tunnel_via) with `{ tls = ... }`: Moongate originates TLS toward the target.
    public var tunnelTLS: TunnelTLSRequest? = nil

    /// Creates an outcome.
    public init(decision: Decision, plugin: String?) {
        self.decision = decision
        self.plugin = plugin
    }

    public var description: String { "\(decision.summary) (\(plugin.map { "plugin \($0)" } ?? "default"))" }
}

/// The hooks a plugin may define.
public enum Hook: String, Sendable, CaseIterable {
    case initialize = "init"
    case route
    case connect
    case sanitizeRequest = "sanitize_request"
    case sanitizeResponse = "sanitize_response"
    case log
}

/// A script's `moongate.tunnel{ tls = { sni = ..., verify = ... } }`: the client sends cleartext in
/// the tunnel and Moongate encrypts it toward the target.
public struct TunnelTLSRequest: Hashable, Sendable {
    /// The SNI name (nil: the target's host, none for an IP literal).
    public var serverName: String?
    /// Whether the target's certificate is verified (chain and name).
    public var verify: Bool

    /// Creates a request.
    public init(serverName: String? = nil, verify: Bool = true) {
        self.serverName = serverName
        self.verify = verify
    }
}
