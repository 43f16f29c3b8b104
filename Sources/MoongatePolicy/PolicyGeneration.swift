import Logging

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A validated, immutable set of plugins and configs: compiled, initialised and tested before it
/// may serve. Event loops build their own ``PolicyInstance`` from it.
public final class PolicyGeneration: Sendable {
    /// Increases with each generation loaded by a process.
    public let id: Int
    public let spec: PolicySpec
    /// The results of the plugins' tests and fixtures (all passed).
    public let testResults: [CaseResult]
    /// Seconds since the Unix epoch when it loaded.
    public let loadedAt: Double

    private init(id: Int, spec: PolicySpec, testResults: [CaseResult], loadedAt: Double) {
        self.id = id
        self.spec = spec
        self.testResults = testResults
        self.loadedAt = loadedAt
    }

    /// Loads and checks a generation: compile, module bodies and `init`, then every plugin's `tests`
    /// and every fixture. Nothing is published unless all of it passes.
    /// - Throws: ``PolicyLoadError`` for the first failure, naming the step, plugin, file, line and
    ///   failing test (``PolicyValidation`` reports every failure instead).
    public static func load(_ spec: PolicySpec, id: Int) throws(PolicyLoadError) -> PolicyGeneration {
        let scratch = try PolicyInstance(spec: spec, generationID: id, stats: PolicyStats(), logger: Logger(label: "moongate.policy.load"))
        let results = PolicyTestRunner.run(spec, instance: scratch)
        if let failed = results.first(where: { !$0.passed }), let error = failed.loadError { throw error }
        var checked = spec
        checked.dataFiles = scratch.dataFiles  // every instance serves the files that were checked
        return PolicyGeneration(id: id, spec: checked, testResults: results, loadedAt: wallClockSeconds())
    }

    /// A new instance for the calling thread (an event loop builds one per generation).
    public func makeInstance(stats: PolicyStats, logger: Logger = Logger(label: "moongate.policy")) throws(PolicyLoadError) -> PolicyInstance {
        try PolicyInstance(spec: spec, generationID: id, stats: stats, logger: logger)
    }
}

/// Seconds since the Unix epoch.
func wallClockSeconds() -> Double {
    Date().timeIntervalSince1970
}
