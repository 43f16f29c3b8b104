import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import Synchronization

/// Holds the live policy generation and hands each event loop an instance of it.
///
/// Publishing a generation is an atomic swap; each loop notices the new id with one atomic load
/// per request and builds its own ``PolicyInstance`` at the next request boundary. A request or
/// tunnel keeps the instance that admitted it (it holds a strong reference) until it ends.
public final class PolicyHost: Sendable {
    private let current: Mutex<PolicyGeneration?>
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

    /// Makes `generation` the live one.
    public func publish(_ generation: PolicyGeneration) {
        current.withLock { $0 = generation }
        currentID.store(generation.id, ordering: .releasing)
    }

    /// The live generation.
    public var generation: PolicyGeneration? { current.withLock { $0 } }

    /// The id of the live generation (0 before the first).
    public var generationID: Int { currentID.load(ordering: .acquiring) }

    /// The live instance for the calling loop, rebuilding the loop's slot when a new generation is out.
    /// - Returns: nil while no generation has loaded (the caller answers 503).
    func instance(in slot: LoopPolicySlot) -> PolicyInstance? {
        let id = currentID.load(ordering: .acquiring)
        if let instance = slot.instance, instance.generationID == id { return instance }
        guard let generation = self.generation else { return nil }
        do {
            let instance = try generation.makeInstance(stats: stats, logger: logger)
            slot.instance = instance
            return instance
        } catch {
            // A generation that loaded once loads again; if it does not (memory), keep the old one.
            logger.error("could not build this loop's policy state", metadata: ["error": "\(error)"])
            return slot.instance
        }
    }
}

/// One event loop's policy instance (only touched on that loop).
final class LoopPolicySlot {
    var instance: PolicyInstance?
}
