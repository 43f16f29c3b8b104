import Logging
import MoongateConfig
import CoreMetrics
import Metrics
import Synchronization

/// Moongate's counters and gauges, through swift-metrics (the serve command bootstraps the
/// Prometheus backend; the admin listener's `/metrics` renders it).
public final class ProxyMetrics: Sendable {
    private struct Key: Hashable {
        let decision: String
        let status: Int
    }

    private let requests = Mutex<[Key: Counter]>([:])
    private let faults = Mutex<[String: Counter]>([:])
    private let reloads = Mutex<[String: Counter]>([:])
    private let openTunnels = Gauge(label: "moongate_open_tunnels")
    private let tunnelsTotal = Counter(label: "moongate_tunnels_total")
    private let bytesUp = Counter(label: "moongate_bytes_relayed_total", dimensions: [("direction", "upstream")])
    private let bytesDown = Counter(label: "moongate_bytes_relayed_total", dimensions: [("direction", "downstream")])
    private let open = Atomic<Int>(0)
    private let overloadGauges = Mutex<[String: Gauge]>([:])
    private let overloadValues = Mutex<[String: Gauge]>([:])
    private let overloadRefusals = Counter(label: "moongate_overload_refused_total")
    private let overloadSheds = Counter(label: "moongate_overload_shed_total")

    /// Creates the metrics (the metrics system should be bootstrapped first).
    public init() {}

    /// One request or tunnel finished with this decision and status.
    func request(decision: String, status: Int) {
        let key = Key(decision: decision, status: status)
        let counter = requests.withLock { cache in
            if let c = cache[key] { return c }
            let c = Counter(label: "moongate_requests_total", dimensions: [("decision", decision), ("status", String(status))])
            cache[key] = c
            return c
        }
        counter.increment()
    }

    func tunnelOpened() {
        tunnelsTotal.increment()
        openTunnels.record(open.add(1, ordering: .relaxed).newValue)
    }

    func tunnelClosed(bytesIn: Int, bytesOut: Int) {
        openTunnels.record(open.subtract(1, ordering: .relaxed).newValue)
        bytesUp.increment(by: bytesIn)
        bytesDown.increment(by: bytesOut)
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
}
