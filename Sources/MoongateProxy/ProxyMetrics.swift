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
}
