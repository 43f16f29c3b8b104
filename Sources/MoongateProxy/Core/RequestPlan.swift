import MoongateConfig
import MoongatePolicy

/// Where a request goes upstream: a configured cluster, or the request's own authority (`forward`).
enum UpstreamDestination {
    case cluster(ClusterTarget)
    case authority(Authority)

    /// The key of its idle connections in each loop's pools.
    var key: String {
        switch self {
        case .cluster(let c): c.poolKey
        case .authority(let a): a.description
        }
    }

    /// Idle connections kept per loop.
    var poolLimit: Int {
        switch self {
        case .cluster(let c): c.config.poolSize
        case .authority: 16
        }
    }
}

/// A response the proxy makes itself.
struct LocalAnswer: Equatable {
    var status: Int
    /// A reason sent as a line of text, or (when `exact`) a script's `respond` body as it is.
    var body: String?
    var headers: [HeaderField] = []
    var exact = false
    /// The connection may serve another request afterwards.
    var keepAlive: Bool
    /// Nothing more is read from this client (a refused tunnel or a malformed request).
    var endsConnection = false
    /// A problem with the deployment to log as an error (an unknown cluster), beyond the access log.
    var problem: String? = nil
}

/// What the protocol-neutral core decided to do with one request head. A codec (HTTP/1.1 today)
/// carries it out on its own wire: it never looks at the policy verdict itself.
enum RequestAction {
    /// Answer locally (deny, respond, a fault, a cap, an unknown cluster).
    case answer(LocalAnswer)
    /// Send the request on: an ordinary exchange, an upgrade, or a CONNECT to a parent proxy.
    case exchange(kind: Exchange.Kind, destination: UpstreamDestination, headers: [HeaderField], keepAlive: Bool)
    /// Terminate a CONNECT here: dial the target, answer 200, relay bytes.
    case terminateTunnel(Authority)
}

/// Turns a request and policy's verdict into a ``RequestAction``: the decision table every codec
/// shares. Pure (no channel, no I/O), so it is unit-tested on its own.
enum RequestPlanner {
    /// - Parameters:
    ///   - request: the request as policy saw it.
    ///   - verdict: policy's answer (decision, upstream headers).
    ///   - keepAlive: the client asked to keep the connection (HTTP/1.1 semantics; a tunnel never does).
    ///   - tunnelRefusal: asked only for an admitted tunnel: why the tunnel caps refuse it, or nil.
    ///   - cluster: looks a cluster up by name.
    static func plan(
        _ request: PolicyRequest, _ verdict: PolicyVerdict, keepAlive: Bool, tunnelRefusal: () -> String?,
        cluster: (String) -> ClusterTarget?
    ) -> RequestAction {
        let decision = verdict.outcome.decision
        if request.isTunnelRequest, decision.admits, let refusal = tunnelRefusal() {
            // The tunnel caps (hardening.md §C.12): a clean 503, and the connection closes.
            return .answer(LocalAnswer(status: 503, body: refusal, keepAlive: false, endsConnection: true))
        }
        let failed = LocalAnswer(status: 500, body: "policy error", keepAlive: keepAlive)
        switch decision {
        case .deny(let status, let reason, let extra):
            return .answer(LocalAnswer(status: status, body: reason, headers: extra, keepAlive: keepAlive))
        case .respond(let status, let body, let extra):
            return .answer(LocalAnswer(status: status, body: body, headers: extra, exact: true, keepAlive: keepAlive))
        case .fault, .noOpinion:
            return .answer(failed)
        case .tunnel:
            guard let target = request.target else { return .answer(LocalAnswer(status: 500, body: "policy error", keepAlive: false)) }
            return .terminateTunnel(target)
        case .tunnelVia(let name):
            return exchange(.connectVia, cluster: name, request, verdict, keepAlive: false, lookup: cluster)
        case .route(let name):
            return exchange(request.upgrade != nil ? .upgrade : .forward, cluster: name, request, verdict, keepAlive: keepAlive, lookup: cluster)
        case .forward:
            return exchange(request.upgrade != nil ? .upgrade : .forward, cluster: nil, request, verdict, keepAlive: keepAlive, lookup: cluster)
        }
    }

    private static func exchange(
        _ kind: Exchange.Kind, cluster name: String?, _ request: PolicyRequest, _ verdict: PolicyVerdict, keepAlive: Bool,
        lookup: (String) -> ClusterTarget?
    ) -> RequestAction {
        let destination: UpstreamDestination
        if let name {
            guard let target = lookup(name) else {
                return .answer(
                    LocalAnswer(status: 503, body: "no such cluster", keepAlive: keepAlive, problem: "policy routed to an unknown cluster '\(name)'"))
            }
            destination = .cluster(target)
        } else {
            guard let host = request.host, let port = request.port else {
                return .answer(LocalAnswer(status: 400, body: "no authority to forward to", keepAlive: keepAlive))
            }
            destination = .authority(Authority(host: host, port: port))
        }
        return .exchange(kind: kind, destination: destination, headers: verdict.upstreamHeaders ?? [], keepAlive: keepAlive)
    }
}
