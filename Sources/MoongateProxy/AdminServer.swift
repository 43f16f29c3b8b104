import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// The admin listener (loopback by default): `GET /ready`, `GET /policy`, `GET /metrics`,
/// `GET /trace` (live decision traces), `POST /reload`.
///
/// Give it an event-loop group of its own (the serve command gives it one thread): then it answers
/// while the proxy's loops are saturated or held by a runaway script, so an operator can still
/// see what is wrong and reload a fix. Nothing it serves waits on a proxy loop: policy state and
/// metrics are read from locked snapshots, and a reload runs on a task of its own.
public final class AdminServer: Service, Sendable {
    private let config: AdminConfig
    private let state: AdminState
    private let group: any EventLoopGroup
    private let logger: Logger
    private let channel = Mutex<(any Channel)?>(nil)

    /// Creates the admin server; `reloader` serves `POST /reload`, `metrics` adds the per-loop
    /// counters to `/metrics` and serves `/trace`, `overload` makes `/ready` answer 503 while
    /// Moongate is overloaded.
    public init(
        config: AdminConfig, policy: PolicyHost, registry: PrometheusCollectorRegistry, reloader: PolicyReloader?,
        group: any EventLoopGroup, logger: Logger, metrics: ProxyMetrics? = nil, overload: OverloadGuard? = nil,
        certificates: [ListenerCertificates] = []
    ) {
        self.config = config
        self.state = AdminState(
            policy: policy, registry: registry, reloader: reloader, metrics: metrics, overload: overload, certificates: certificates)
        self.group = group
        self.logger = logger
    }

    /// Binds the admin listener and returns its address.
    @discardableResult
    public func start() async throws -> SocketAddress? {
        HTTP1Pipeline.instantiateHandlerTypes()
        let state = self.state
        let bound = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(state: state))
                }
            }
            .bind(host: config.address, port: config.port).get()
        channel.withLock { $0 = bound }
        logger.info("admin listening", metadata: ["address": "\(bound.localAddress.map { "\($0)" } ?? "?")"])
        return bound.localAddress
    }

    public func run() async throws {
        if channel.withLock({ $0 == nil }) { try await start() }
        try? await gracefulShutdown()
        let bound = channel.withLock { $0 }
        try? await bound?.close()
    }
}

/// What the admin handlers read.
final class AdminState: Sendable {
    let policy: PolicyHost
    let registry: PrometheusCollectorRegistry
    let reloader: PolicyReloader?
    let metrics: ProxyMetrics?
    let overload: OverloadGuard?
    let certificates: [ListenerCertificates]

    init(
        policy: PolicyHost, registry: PrometheusCollectorRegistry, reloader: PolicyReloader?, metrics: ProxyMetrics? = nil,
        overload: OverloadGuard? = nil, certificates: [ListenerCertificates] = []
    ) {
        self.policy = policy
        self.registry = registry
        self.reloader = reloader
        self.metrics = metrics
        self.overload = overload
        self.certificates = certificates
    }

    func respond(method: HTTPMethod, path: String) -> (HTTPResponseStatus, String, String) {
        switch (method, path) {
        case (.GET, "/ready"):
            if policy.generation == nil { return (.serviceUnavailable, "text/plain", "no policy loaded\n") }
            if let overloaded = overload?.overloadedResources, !overloaded.isEmpty {
                return (.serviceUnavailable, "text/plain", "overloaded: \(overloaded.map(\.label).joined(separator: ", "))\n")
            }
            return (.ok, "text/plain", "ready\n")
        case (.GET, "/metrics"):
            return (.ok, "text/plain; version=0.0.4", registry.emitToString() + (metrics?.exposition() ?? ""))
        case (.GET, "/policy"):
            return (.ok, "application/json", policyJSON())
        case (_, "/reload"):
            return (.methodNotAllowed, "text/plain", "use POST /reload\n")
        default:
            return (.notFound, "text/plain", "not found\n")
        }
    }

    /// `POST /reload`: runs a reload (off the event loop) and answers with its outcome.
    func reload() -> (HTTPResponseStatus, String, String) {
        guard let reloader else { return (.notFound, "text/plain", "reloading is not configured\n") }
        let attempt = reloader.reload(reason: "admin")
        return (attempt.result == "loaded" ? .ok : .unprocessableEntity, "application/json", Self.json(attempt) + "\n")
    }

    static func json(_ attempt: ReloadAttempt) -> String {
        var fields = [
            "\"result\":\(JSON.quote(attempt.result))", "\"reason\":\(JSON.quote(attempt.reason))", "\"at\":\(attempt.at)",
            "\"ms\":\(attempt.milliseconds)",
        ]
        if let generation = attempt.generation { fields.append("\"generation\":\(generation)") }
        if let error = attempt.error {
            var e = ["\"step\":\(JSON.quote(error.step.rawValue))", "\"file\":\(JSON.quote(error.file))", "\"message\":\(JSON.quote(error.message))"]
            if let plugin = error.plugin { e.append("\"plugin\":\(JSON.quote(plugin))") }
            if let line = error.line { e.append("\"line\":\(line)") }
            if let test = error.testName { e.append("\"test\":\(JSON.quote(test))") }
            fields.append("\"error\":{\(e.joined(separator: ","))}")
        }
        if let configError = attempt.configError { fields.append("\"error\":{\"message\":\(JSON.quote(configError))}") }
        return "{\(fields.joined(separator: ","))}"
    }

    private func policyJSON() -> String {
        guard let generation = policy.generation else { return "{\"generation\":null}\n" }
        let plugins = generation.spec.plugins.map { p in
            "{\"name\":\(JSON.quote(p.name)),\"file\":\(JSON.quote(p.path)),\"priority\":\(p.priority)}"
        }
        let digests = reloader?.digests ?? [:]
        let files = digests.keys.sorted().map { "{\"path\":\(JSON.quote($0)),\"sha256\":\(JSON.quote(digests[$0]!))}" }
        var text = "{\"generation\":\(generation.id),\"loaded_at\":\(generation.loadedAt),"
        text += "\"reason\":\(JSON.quote(generation.id == 1 ? "startup" : (reloader?.lastLoadedReason ?? "reload"))),"
        text += "\"tests_passed\":\(generation.testResults.count),\"plugins\":[\(plugins.joined(separator: ","))],"
        text += "\"files\":[\(files.joined(separator: ","))]"
        if let last = reloader?.lastAttempt { text += ",\"last_attempt\":\(Self.json(last))" }
        if !certificates.isEmpty { text += ",\"tls\":\(TLSStatusJSON.render(certificates))" }
        return text + "}\n"
    }
}

/// Minimal JSON string quoting.
enum JSON {
    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// An admin answer computed off the event loop.
struct AdminAnswer: Sendable {
    let status: HTTPResponseStatus
    let type: String
    let body: String
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: AdminState
    private var head: HTTPRequestHead?

    init(state: AdminState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "/")
            let keepAlive = head.isKeepAlive
            if head.method == .GET && path == "/trace" { return TraceStream.start(uri: head.uri, hub: state.metrics?.tracing, context: context) }
            if head.method == .POST && path == "/reload" {
                // Compiling and testing scripts must not block the event loop.
                let promise = context.eventLoop.makePromise(of: AdminAnswer.self)
                let state = self.state
                Task.detached {
                    let (status, type, body) = state.reload()
                    promise.succeed(AdminAnswer(status: status, type: type, body: body))
                }
                promise.futureResult.assumeIsolated().whenSuccess { answer in
                    self.send(answer.status, answer.type, answer.body, keepAlive: keepAlive, context: context)
                }
                return
            }
            let (status, type, body) = state.respond(method: head.method, path: path)
            send(status, type, body, keepAlive: keepAlive, context: context)
        }
    }

    private func send(_ status: HTTPResponseStatus, _ type: String, _ body: String, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("content-type", type), ("content-length", String(body.utf8.count))])
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
