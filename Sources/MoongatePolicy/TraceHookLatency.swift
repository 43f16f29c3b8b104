#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Hook latency histograms per plugin and hook, with fixed buckets.
///
/// Each thread (each event loop) records into histograms of its own, so a call costs two clock
/// reads and two relaxed atomic loads and stores (plain moves on x86-64), never a lock or a locked
/// instruction; a scrape adds the threads' histograms up. A ``PolicyInstance`` records only when its ``PolicyStats`` carries one of these
/// (the proxy's does; test runs and `moongate decide` do not).
public final class HookLatencies: Sendable {
    /// Upper bounds of the buckets, in nanoseconds (a last bucket, +Inf, takes the rest).
    public static let bounds: [UInt64] = [
        1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
        10_000_000,
    ]

    /// One plugin's hook, summed over the threads.
    public struct Summary: Sendable, Hashable {
        public let plugin: String
        public let hook: String
        /// Cumulative counts, one per bound, then the total (Prometheus' `le` buckets).
        public let cumulative: [UInt64]
        public let count: UInt64
        public let sumNanoseconds: UInt64
    }

    private struct Key: Hashable {
        let plugin: String
        let hook: String
        let thread: UInt
    }

    /// Never removed: instances point at them unretained (see `PolicyInstance`).
    private let histograms = Mutex<[Key: HookHistogram]>([:])

    /// Creates an empty set.
    public init() {}

    /// The calling thread's histogram of one plugin's hook (a lock here, once per instance and hook).
    func histogram(plugin: String, hook: String) -> HookHistogram {
        let key = Key(plugin: plugin, hook: hook, thread: Self.threadID)
        return histograms.withLock { table in
            if let h = table[key] { return h }
            let h = HookHistogram()
            table[key] = h
            return h
        }
    }

    /// Every plugin's hook, summed over threads, sorted by plugin then hook.
    public func summaries() -> [Summary] {
        let all = histograms.withLock { Array($0) }
        var merged: [String: (plugin: String, hook: String, buckets: [UInt64], sum: UInt64)] = [:]
        for (key, histogram) in all {
            let id = key.plugin + "\u{0}" + key.hook
            var entry = merged[id] ?? (key.plugin, key.hook, Array(repeating: 0, count: Self.bounds.count + 1), 0)
            for i in 0...Self.bounds.count { entry.buckets[i] &+= histogram.bucket(i) }
            entry.sum &+= histogram.sum
            merged[id] = entry
        }
        return merged.values.map { entry in
            var running: UInt64 = 0
            let cumulative = entry.buckets.map { running &+= $0; return running }
            return Summary(plugin: entry.plugin, hook: entry.hook, cumulative: cumulative, count: running, sumNanoseconds: entry.sum)
        }.sorted { ($0.plugin, $0.hook) < ($1.plugin, $1.hook) }
    }

    private static var threadID: UInt {
        #if canImport(Glibc)
        return UInt(pthread_self())
        #else
        return 0
        #endif
    }
}

/// One thread's histogram of one hook: fixed buckets of atomics (written by that thread, read by scrapes).
final class HookHistogram: Sendable {
    private let buckets: InlineArray<14, Atomic<UInt64>>
    private let total = Atomic<UInt64>(0)

    init() {
        buckets = InlineArray { _ in Atomic<UInt64>(0) }
    }

    /// Counts one call of `ns` nanoseconds.
    @inline(__always)
    func record(_ ns: UInt64) {
        let bounds = HookLatencies.bounds
        var i = 0
        while i < bounds.count && ns > bounds[i] { i += 1 }
        // One writer per histogram (its thread): a relaxed load and store, no locked instruction.
        buckets[i].store(buckets[i].load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        total.store(total.load(ordering: .relaxed) &+ ns, ordering: .relaxed)
    }

    func bucket(_ i: Int) -> UInt64 { buckets[i].load(ordering: .relaxed) }

    var sum: UInt64 { total.load(ordering: .relaxed) }
}

/// The monotonic clock in nanoseconds (hook timings and traces).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    #if canImport(Glibc)
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    #else
    return 0
    #endif
}
