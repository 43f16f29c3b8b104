import ArgumentParser
import Logging
import LuaKit
import Metrics
import MoongateConfig
import MoongatePolicy
import MoongateProxy
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import UnixSignals

/// `moongate serve [--config FILE]`: run the proxy until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy (the default command).")

    @Option(name: .shortAndLong, help: "The config file.")
    var config: String = "configs/default.yaml"

    @Flag(inversion: .prefixedNo, help: "Reload policy when a script or the config changes (SIGHUP and POST /reload always work).")
    var watch = true

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "moongate")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        let loaded: MoongateConfiguration
        let generation: PolicyGeneration
        do {
            loaded = try ConfigLoader.load(path: config)
            generation = try PolicyGeneration.load(try PolicySpec.read(loaded.policy), id: 1)
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        let metrics = ProxyMetrics()
        let stats = PolicyStats(hookLatencies: metrics.hookLatencies) { fault in
            metrics.fault(plugin: fault.plugin, hook: fault.hook, kind: fault.kind.description)
        }
        let policy = PolicyHost(stats: stats, logger: Logger(label: "moongate.policy"))
        policy.publish(generation, config: loaded)
        metrics.reload(result: "loaded")
        logger.info(
            "policy loaded",
            metadata: ["generation": "\(generation.id)", "plugins": "\(generation.spec.plugins.map(\.name))", "tests": "\(generation.testResults.count)"])

        let threads = loaded.eventLoopThreads > 0 ? loaded.eventLoopThreads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        // Name lookups block a thread each: a pool of their own, sized by `resolver.threads`.
        let threadPool = NIOThreadPool(numberOfThreads: loaded.resolver.threads)
        threadPool.start()
        let server = ProxyServer(config: loaded, policy: policy, metrics: metrics, logger: logger, group: group, threadPool: threadPool)
        let reloader = PolicyReloader(
            configPath: config, running: loaded, policy: policy, metrics: metrics, logger: Logger(label: "moongate.reload"),
            watch: loaded.policy.watch && watch, onLoaded: { [server] in server.configReloaded($0) })
        var services: [any Service] = [server, reloader]
        // The admin listener has a thread of its own, so it answers while the proxy's loops are
        // saturated or held by a runaway script.
        let adminGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try await server.start()
        } catch {
            printError("moongate: cannot listen: \(error)")
            throw ExitCode.failure
        }
        if !server.certificates.isEmpty {
            services.append(CertificateReloader(listeners: server.certificates, logger: Logger(label: "moongate.tls")))
        }
        if let admin = loaded.admin {
            services.append(
                AdminServer(
                    config: admin, policy: policy, registry: registry, reloader: reloader, group: adminGroup, logger: logger,
                    metrics: metrics, overload: server.overload, certificates: server.certificates))
        }
        let serviceGroup = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        try await threadPool.shutdownGracefully()
        try await group.shutdownGracefully()
        try await adminGroup.shutdownGracefully()
    }
}
