import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import Synchronization

/// Moongate's overload guard, in the spirit of Envoy's overload manager.
///
/// It watches open client connections (counted as they open and close), bytes waiting in socket
/// write buffers and resident memory (both sampled every `overload.check_interval`, off the event
/// loops). Past any threshold, new requests are refused with `503` and `Retry-After`, and idle
/// keep-alive connections are shed (``OverloadShedEvent``) at once and at every check while it
/// lasts; once every resource is back at or under its recovery level, requests are served again.
/// Entering and leaving are logged (one line each) and shown in `moongate_overload_active`.
///
/// The request path reads one relaxed atomic (``isOverloaded``); nothing here waits on an event loop.
public final class OverloadGuard: Sendable {
    private let config: Mutex<OverloadConfig>
    private let levels: Mutex<[OverloadResource: ResourceLevel]>
    private let active = Atomic<Int>(0)
    private let watchesConnections = Atomic<Bool>(false)
    private let watchesBuffers = Atomic<Bool>(false)
    private let metrics: ProxyMetrics
    private let logger: Logger
    private let clients: ConnectionRegistry
    private let upstreams = ConnectionRegistry()
    /// The latest buffered-byte sum of each event loop's channels.
    private let buffered = Mutex<[ObjectIdentifier: Int]>([:])
    private let retryAfterText: Mutex<String>

    init(config: OverloadConfig, clients: ConnectionRegistry, metrics: ProxyMetrics, logger: Logger) {
        self.config = Mutex(config)
        self.clients = clients
        self.metrics = metrics
        self.logger = logger
        self.retryAfterText = Mutex(String(config.retryAfterSeconds))
        self.levels = Mutex([:])
        apply(config)
    }

    /// The `Retry-After` value of a refused request.
    var retryAfter: String { retryAfterText.withLock { $0 } }

    /// Takes new thresholds (a reload of the config): a resource keeps its last value and is
    /// judged against its new threshold at once; one no longer configured stops being watched.
    public func apply(_ new: OverloadConfig) {
        config.withLock { $0 = new }
        retryAfterText.withLock { $0 = String(new.retryAfterSeconds) }
        watchesConnections.store(new.maxConnections != nil, ordering: .relaxed)
        watchesBuffers.store(new.maxBufferedBytes != nil, ordering: .relaxed)
        let thresholds: [OverloadResource: Int?] = [
            .connections: new.maxConnections, .bufferedBytes: new.maxBufferedBytes, .memory: new.maxMemory,
        ]
        var values: [(OverloadResource, Int)] = []
        levels.withLock { levels in
            for (resource, threshold) in thresholds {
                let old = levels[resource]
                guard let threshold else {
                    levels[resource] = nil
                    continue
                }
                var level = ResourceLevel(threshold: threshold, recoverRatio: new.recoverRatio)
                level.overloaded = old?.overloaded ?? false
                levels[resource] = level
                values.append((resource, resource == .connections ? clients.count : old?.value ?? 0))
            }
        }
        for resource in OverloadResource.allCases where thresholds[resource]! == nil {
            if active.load(ordering: .relaxed) & resource.bit != 0 {
                active.bitwiseAnd(~resource.bit, ordering: .relaxed)
                logger.notice("overload over: no longer watched", metadata: ["resource": "\(resource.label)"])
            }
        }
        for (resource, value) in values {
            metrics.overloadActive(resource: resource.label, active: active.load(ordering: .relaxed) & resource.bit != 0)
            record(resource, value)
        }
    }

    /// True while any resource is past its threshold (one relaxed atomic load).
    public var isOverloaded: Bool { active.load(ordering: .relaxed) != 0 }

    /// The resources overloaded now.
    public var overloadedResources: [OverloadResource] {
        let mask = active.load(ordering: .relaxed)
        return OverloadResource.allCases.filter { mask & $0.bit != 0 }
    }

    /// The number of open client connections changed.
    func connectionsChanged(_ count: Int) {
        guard watchesConnections.load(ordering: .relaxed) else { return }
        record(.connections, count)
    }

    /// Counts an upstream connection's write buffer toward `buffered_bytes` while it is open.
    func track(upstream channel: any Channel) {
        guard watchesBuffers.load(ordering: .relaxed) else { return }
        let upstreams = self.upstreams
        upstreams.opened(channel)
        channel.closeFuture.whenComplete { _ in upstreams.closed(channel) }
    }

    /// A request was refused because of overload.
    func refused() { metrics.overloadRefused() }

    /// Counts a refused request and returns its answer (HTTP/2 streams; the stream ends, the
    /// connection stays).
    func refusal() -> LocalAnswer {
        refused()
        return LocalAnswer(
            status: 503, body: "overloaded, retry later", headers: [HeaderField("retry-after", retryAfter)], keepAlive: true)
    }

    /// An idle keep-alive connection was closed because of overload.
    func shed() { metrics.overloadShed() }

    /// Samples memory and buffered bytes every `check_interval` until the task is cancelled.
    func watch() async {
        while !Task.isCancelled {
            let config = self.config.withLock { $0 }
            if config.isEnabled { check(config) }
            try? await Task.sleep(for: config.isEnabled ? config.checkInterval : .seconds(1))
        }
    }

    /// One check: memory now, the buffered bytes the loops last reported (and a new report asked
    /// for), and a round of shedding while overloaded.
    private func check(_ config: OverloadConfig) {
        if config.maxMemory != nil, let rss = ResidentMemory.bytes() { record(.memory, rss) }
        if config.maxBufferedBytes != nil {
            record(.bufferedBytes, buffered.withLock { $0.values.reduce(0, +) })
            requestBufferedBytes()
        }
        if isOverloaded { shedIdle() }
    }

    /// Asks each event loop for the bytes waiting in its channels' write buffers; a stalled loop
    /// answers late, and its last answer stands meanwhile.
    private func requestBufferedBytes() {
        var byLoop: [ObjectIdentifier: (any EventLoop, [any Channel])] = [:]
        for channel in clients.snapshot() + upstreams.snapshot() {
            byLoop[ObjectIdentifier(channel.eventLoop), default: (channel.eventLoop, [])].1.append(channel)
        }
        buffered.withLock { sums in
            for key in sums.keys where byLoop[key] == nil { sums[key] = 0 }
        }
        for (key, (loop, channels)) in byLoop {
            loop.execute {
                var total = 0
                for channel in channels {
                    total += (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
                }
                self.buffered.withLock { $0[key] = total }
            }
        }
    }

    private func shedIdle() {
        for channel in clients.snapshot() {
            channel.pipeline.fireUserInboundEventTriggered(OverloadShedEvent())
        }
    }

    private func record(_ resource: OverloadResource, _ value: Int) {
        let change = levels.withLock { levels -> ResourceLevel? in
            guard var level = levels[resource] else { return nil }
            let changed = level.update(value)
            levels[resource] = level
            if changed {
                if level.overloaded {
                    active.bitwiseOr(resource.bit, ordering: .relaxed)
                } else {
                    active.bitwiseAnd(~resource.bit, ordering: .relaxed)
                }
            }
            return changed ? level : nil
        }
        metrics.overloadValue(resource: resource.label, value: value)
        guard let level = change else { return }
        metrics.overloadActive(resource: resource.label, active: level.overloaded)
        let metadata: Logger.Metadata = [
            "resource": "\(resource.label)", "value": "\(value)", "threshold": "\(level.threshold)",
            "recover_at": "\(level.recoverAt)",
        ]
        if level.overloaded {
            logger.warning("overloaded: refusing new requests with 503 and shedding idle connections", metadata: metadata)
            shedIdle()
        } else {
            logger.notice("overload over: serving requests again", metadata: metadata)
        }
    }
}
