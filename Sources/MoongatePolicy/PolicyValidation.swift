import Logging

/// Everything `moongate validate` checks, with every failure rather than the first: each plugin
/// that does not compile or initialise, each failing or malformed test of every plugin, each failing
/// or malformed fixture line, every one with its file and line.
public struct PolicyValidation: Sendable {
    /// Every failure, in order: plugin load failures first, then failing cases.
    public let problems: [PolicyLoadError]
    /// Every case that ran (passed or failed).
    public let results: [CaseResult]
    /// Plugins in the spec, and how many of them did not load.
    public let pluginCount: Int
    public let pluginsNotLoaded: Int
    /// True when fixtures were only parsed, not replayed, because some plugin did not load.
    public let fixturesSkipped: Bool

    /// True when nothing failed.
    public var passed: Bool { problems.isEmpty }

    /// Cases that failed (malformed ones included).
    public var failedCases: Int { results.filter { !$0.passed }.count }

    /// One line of counts: `3 problems: 1 of 3 plugins did not load, 2 of 41 tests failed`.
    public var summary: String {
        var parts = ["\(failedCases) of \(results.count) tests failed"]
        if pluginsNotLoaded > 0 { parts.insert("\(pluginsNotLoaded) of \(pluginCount) plugins did not load", at: 0) }
        if fixturesSkipped { parts.append("fixtures not replayed") }
        let count = problems.count
        return "\(count) problem\(count == 1 ? "" : "s"): " + parts.joined(separator: ", ")
    }

    /// Loads every plugin of `spec` that loads and runs every test and fixture.
    /// - Parameter scriptLogger: where the lines scripts log while loading and testing go.
    public static func run(_ spec: PolicySpec, scriptLogger: Logger = Logger(label: "moongate.script")) -> PolicyValidation {
        // A fault in a test is reported with that test; it is not logged a second time.
        let faults = Logger(label: "moongate.policy.validate") { _ in SwiftLogNoOpLogHandler() }
        let (instance, loadFailures) = PolicyInstance.loadingEveryPlugin(
            spec, generationID: 0, stats: PolicyStats(), logger: faults, scriptLogger: scriptLogger)
        guard let instance else {
            return PolicyValidation(
                problems: loadFailures, results: [], pluginCount: spec.plugins.count, pluginsNotLoaded: spec.plugins.count,
                fixturesSkipped: !spec.fixtures.isEmpty)
        }
        let replay = loadFailures.isEmpty
        let results = PolicyTestRunner.run(spec, instance: instance, replayFixtures: replay)
        return PolicyValidation(
            problems: loadFailures + results.compactMap(\.loadError), results: results, pluginCount: spec.plugins.count,
            pluginsNotLoaded: loadFailures.count, fixturesSkipped: !replay && !spec.fixtures.isEmpty)
    }
}
