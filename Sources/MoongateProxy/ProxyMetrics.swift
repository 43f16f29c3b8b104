#if canImport(Glibc)
import Glibc
#endif
import Logging
import MoongateConfig
import MoongatePolicy
import CoreMetrics
import Metrics
import Synchronization

/// Moongate's counters and gauges.
///
/// Requests, bytes and refusals are counted per event loop (each loop's own counters, found through
/// a thread-specific pointer, behind a lock only that loop and a scrape ever take) and merged when
/// `/metrics` is scraped (``exposition()``); hook latencies likewise (``HookLatencies``). Faults,
/// reloads and tunnels go through swift-metrics (the serve command bootstraps the Prometheus
/// backend). The live trace hub rides along (``tracing``), so every codec reaches it.
public final class ProxyMetrics: Sendable {
    /// Hook latency histograms (hand them to the ``PolicyStats`` of the serving instances).
    public let hookLatencies = HookLatencies()
    /// Live traces (`GET /trace` on the admin listener).
    public let tracing = TraceHub()

    private let faults = Mutex<[String: Counter]>([:])
    private let reloads = Mutex<[String: Counter]>([:])
    private let openTunnels = Gauge(label: "moongate_open_tunnels")
    private let tunnelsTotal = Counter(label: "moongate_tunnels_total")
    private let open = Atomic<Int>(0)
    /// Every loop's counters (appended once per thread).
    private let loops = Mutex<[LoopCounters]>([])
    #if canImport(Glibc)
    private let key: pthread_key_t
    #endif
    private let overloadGauges = Mutex<[String: Gauge]>([:])
    private let overloadValues = Mutex<[String: Gauge]>([:])
    private let overloadRefusals = Counter(label: "moongate_overload_refused_total")
    private let overloadSheds = Counter(label: "moongate_overload_shed_total")

    /// Creates the metrics (the metrics system should be bootstrapped first).
    public init() {
        #if canImport(Glibc)
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        self.key = key
        #endif
    }

    deinit {
        #if canImport(Glibc)
        pthread_key_delete(key)
        #endif
    }

    /// The calling thread's counters (made on first use; the list keeps them alive).
    private var local: LoopCounters {
        #if canImport(Glibc)
        if let raw = pthread_getspecific(key) { return Unmanaged<LoopCounters>.fromOpaque(raw).takeUnretainedValue() }
        let counters = LoopCounters()
        loops.withLock { $0.append(counters) }
        pthread_setspecific(key, Unmanaged.passUnretained(counters).toOpaque())
        return counters
        #else
        return loops.withLock { list in
            if let first = list.first { return first }
            list.append(LoopCounters())
            return list[0]
        }
        #endif
    }

    /// One request or tunnel finished: counted by decision, status and cluster, its body bytes
    /// (forwarded requests) or relayed bytes (tunnels), and its refusal reason if it was refused.
    func request(
        decision: String, status: Int, cluster: String?, refusal: RefusalReason?, bytesIn: Int, bytesOut: Int, tunnel: Bool
    ) {
        local.count(
            RequestKey(decision: decision, status: status, cluster: cluster ?? "-"), refusal: refusal?.metricReason,
            bytesIn: bytesIn, bytesOut: bytesOut, tunnel: tunnel)
    }

    func tunnelOpened() {
        tunnelsTotal.increment()
        openTunnels.record(open.add(1, ordering: .relaxed).newValue)
    }

    func tunnelClosed() {
        openTunnels.record(open.subtract(1, ordering: .relaxed).newValue)
    }

    /// A script fault (counted per plugin, hook and kind).
    public func fault(plugin: String, hook: String, kind: String) {
        let key = "\(plugin)|\(hook)|\(kind)"
        let counter = faults.withLock { cache in
            if let c = cache[key] { return c }
            let c = Counter(label: "moongate_policy_faults_total", dimensions: [("plugin", plugin), ("hook", hook), ("kind", kind)])
            cache[key] = c
            return c
        }
        counter.increment()
    }

    /// A policy reload attempt with its result (`loaded` or `rejected`).
    public func reload(result: String) {
        let counter = reloads.withLock { cache in
            if let c = cache[result] { return c }
            let c = Counter(label: "moongate_policy_reloads_total", dimensions: [("result", result)])
            cache[result] = c
            return c
        }
        counter.increment()
    }

    /// Whether a resource is overloaded now (`moongate_overload_active{resource}`, 1 or 0).
    func overloadActive(resource: String, active: Bool) {
        Self.gauge(overloadGauges, "moongate_overload_active", resource).record(active ? 1 : 0)
    }

    /// A watched resource's latest value (`moongate_overload_value{resource}`).
    func overloadValue(resource: String, value: Int) {
        Self.gauge(overloadValues, "moongate_overload_value", resource).record(value)
    }

    /// A request refused with 503 because of overload.
    func overloadRefused() { overloadRefusals.increment() }

    /// An idle keep-alive connection closed because of overload.
    func overloadShed() { overloadSheds.increment() }

    private static func gauge(_ cache: borrowing Mutex<[String: Gauge]>, _ label: String, _ resource: String) -> Gauge {
        cache.withLock { cache in
            if let g = cache[resource] { return g }
            let g = Gauge(label: label, dimensions: [("resource", resource)])
            cache[resource] = g
            return g
        }
    }

    /// The per-loop counters and hook latencies, merged, in the Prometheus text format (appended to
    /// the registry's own output by `/metrics`).
    public func exposition() -> String {
        var merged = LoopCounts()
        for loop in loops.withLock({ $0 }) { merged.add(loop.snapshot) }
        var out = "# HELP moongate_requests_total Requests and tunnels finished, by decision, status and cluster.\n"
        out += "# TYPE moongate_requests_total counter\n"
        for (key, n) in merged.requests.sorted(by: { ($0.key.decision, $0.key.status, $0.key.cluster) < ($1.key.decision, $1.key.status, $1.key.cluster) }) {
            out += "moongate_requests_total{decision=\(Self.label(key.decision)),status=\"\(key.status)\",cluster=\(Self.label(key.cluster))} \(n)\n"
        }
        out += "# HELP moongate_bytes_relayed_total Body bytes of forwarded requests and bytes of tunnels, each way.\n"
        out += "# TYPE moongate_bytes_relayed_total counter\n"
        for (kind, up, down) in [("forward", merged.forwardUp, merged.forwardDown), ("tunnel", merged.tunnelUp, merged.tunnelDown)] {
            out += "moongate_bytes_relayed_total{direction=\"upstream\",kind=\"\(kind)\"} \(up)\n"
            out += "moongate_bytes_relayed_total{direction=\"downstream\",kind=\"\(kind)\"} \(down)\n"
        }
        out += "# HELP moongate_refusals_total Requests refused, by what refused them.\n"
        out += "# TYPE moongate_refusals_total counter\n"
        for reason in RefusalReason.metricReasons {
            out += "moongate_refusals_total{reason=\"\(reason)\"} \(merged.refusals[reason, default: 0])\n"
        }
        out += "# HELP moongate_hook_duration_seconds Time of each plugin's hook calls on the event loop.\n"
        out += "# TYPE moongate_hook_duration_seconds histogram\n"
        for summary in hookLatencies.summaries() {
            let labels = "plugin=\(Self.label(summary.plugin)),hook=\(Self.label(summary.hook))"
            for (i, bound) in HookLatencies.bounds.enumerated() {
                out += "moongate_hook_duration_seconds_bucket{\(labels),le=\"\(Self.seconds(bound))\"} \(summary.cumulative[i])\n"
            }
            out += "moongate_hook_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(summary.count)\n"
            out += "moongate_hook_duration_seconds_sum{\(labels)} \(Self.seconds(summary.sumNanoseconds))\n"
            out += "moongate_hook_duration_seconds_count{\(labels)} \(summary.count)\n"
        }
        return out
    }

    private static func seconds(_ ns: UInt64) -> String {
        let whole = ns / 1_000_000_000
        var fraction = String(ns % 1_000_000_000)
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return fraction.isEmpty ? "\(whole)" : "\(whole).\(fraction)"
    }

    /// A quoted label value (backslash, quote and newline escaped).
    private static func label(_ value: String) -> String {
        var out = "\""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out + "\""
    }
}

struct RequestKey: Hashable {
    let decision: String
    let status: Int
    let cluster: String
}

/// What one loop counted.
struct LoopCounts {
    var requests: [RequestKey: UInt64] = [:]
    var refusals: [String: UInt64] = [:]
    var forwardUp: UInt64 = 0
    var forwardDown: UInt64 = 0
    var tunnelUp: UInt64 = 0
    var tunnelDown: UInt64 = 0

    mutating func add(_ other: LoopCounts) {
        for (k, v) in other.requests { requests[k, default: 0] &+= v }
        for (k, v) in other.refusals { refusals[k, default: 0] &+= v }
        forwardUp &+= other.forwardUp
        forwardDown &+= other.forwardDown
        tunnelUp &+= other.tunnelUp
        tunnelDown &+= other.tunnelDown
    }
}

/// One event loop's counters: only that loop writes them, so their lock is never contended except
/// by a scrape.
final class LoopCounters: Sendable {
    private let counts = Mutex(LoopCounts())

    func count(_ key: RequestKey, refusal: String?, bytesIn: Int, bytesOut: Int, tunnel: Bool) {
        counts.withLock { c in
            c.requests[key, default: 0] &+= 1
            if let refusal { c.refusals[refusal, default: 0] &+= 1 }
            if tunnel {
                c.tunnelUp &+= UInt64(max(bytesIn, 0))
                c.tunnelDown &+= UInt64(max(bytesOut, 0))
            } else {
                c.forwardUp &+= UInt64(max(bytesIn, 0))
                c.forwardDown &+= UInt64(max(bytesOut, 0))
            }
        }
    }

    var snapshot: LoopCounts { counts.withLock { $0 } }
}
