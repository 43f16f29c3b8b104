import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import Synchronization

/// Holds the live generation (policy scripts plus the configuration they were validated against)
/// and hands each event loop an instance of it.
///
/// Publishing a generation is an atomic swap; each loop notices the new id with one atomic load
/// per request and builds its own ``PolicyInstance`` at the next request boundary, switching to the
/// generation's clusters, limits and timeouts (``LiveSettings``) at the same moment. A request or
/// tunnel keeps the instance and the clusters that admitted it until it ends.
public final class PolicyHost: Sendable {
    private struct Published {
        let generation: PolicyGeneration
        let settings: LiveSettings
    }

    private let current: Mutex<Published?>
    private let currentID = Atomic<Int>(0)
    /// Fault counters shared by every instance.
    public let stats: PolicyStats
    private let logger: Logger

    /// Creates a host with no generation yet (requests get 503 until one is published).
    public init(stats: PolicyStats, logger: Logger) {
        self.current = Mutex(nil)
        self.stats = stats
        self.logger = logger
    }

    /// Makes `generation` the live one, with the clusters, limits and timeouts of `config` (the
    /// configuration it was loaded and validated from).
    public func publish(_ generation: PolicyGeneration, config: MoongateConfiguration) {
        let published = Published(generation: generation, settings: LiveSettings(config))
        current.withLock { $0 = published }
        currentID.store(generation.id, ordering: .releasing)
    }

    /// The live generation.
    public var generation: PolicyGeneration? { current.withLock { $0?.generation } }

    /// The id of the live generation (0 before the first).
    public var generationID: Int { currentID.load(ordering: .acquiring) }

    /// The live generation's settings (a fresh loop starts with them); nil before the first.
    var liveSettings: LiveSettings? { current.withLock { $0?.settings } }

    /// The live instance for the calling loop, rebuilding the loop's slot when a new generation is out.
    /// - Returns: nil while no generation has loaded (the caller answers 503).
    func instance(in slot: LoopPolicySlot) -> PolicyInstance? {
        let id = currentID.load(ordering: .acquiring)
        if let instance = slot.instance, instance.generationID == id { return instance }
        guard let published = current.withLock({ $0 }) else { return nil }
        do {
            let instance = try published.generation.makeInstance(stats: stats, logger: logger)
            slot.instance = instance
            slot.adopt(published.settings)
            return instance
        } catch {
            // A generation that loaded once loads again; if it does not (memory), keep the old one.
            logger.error("could not build this loop's policy state", metadata: ["error": "\(error)"])
            return slot.instance
        }
    }
}

/// One event loop's policy instance and settings (only touched on that loop).
final class LoopPolicySlot {
    var instance: PolicyInstance?
    /// The clusters, limits and timeouts of the loop's current generation.
    private(set) var settings: LiveSettings
    private let pools: UpstreamPools

    init(settings: LiveSettings, pools: UpstreamPools) {
        self.settings = settings
        self.pools = pools
    }

    /// Switches to a generation's settings; idle connections of clusters that no longer exist (or
    /// whose endpoints moved) are closed.
    func adopt(_ new: LiveSettings) {
        guard new !== settings else { return }
        settings = new
        pools.closeIdle { $0.hasPrefix(ClusterTarget.keyPrefix) && !new.clusterPoolKeys.contains($0) }
    }
}
