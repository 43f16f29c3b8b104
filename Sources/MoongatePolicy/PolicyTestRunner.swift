import Logging
import LuaKit
import MoongateConfig

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Runs every plugin's own `tests` table and the spec's fixtures. A generation goes live only when
/// every case passes.
public enum PolicyTestRunner {
    /// Runs every plugin's `tests` (each case against that plugin alone, raw hook answer, with the
    /// case's own config when it has one) and every fixture (against the whole composition).
    /// - Throws: ``PolicyLoadError`` for a plugin that does not load or a malformed case.
    public static func run(_ spec: PolicySpec, instance: PolicyInstance) throws(PolicyLoadError) -> [CaseResult] {
        var results: [CaseResult] = []
        for (index, plugin) in instance.plugins.enumerated() {
            let source = spec.plugins[index]
            results += try runPluginTests(source: source, plugin: plugin, index: index, instance: instance, spec: spec)
        }
        for fixture in spec.fixtures {
            let cases: [DecisionCase]
            do {
                cases = try DecisionCase.parseJSONL(fixture.text, file: fixture.path)
            } catch {
                throw PolicyLoadError(step: .fixture, plugin: nil, file: fixture.path, message: error.message)
            }
            for testCase in cases {
                results.append(evaluateComposed(testCase, instance: instance, file: fixture.path))
            }
        }
        return results
    }

    /// A case against the whole composition (what the proxy would do).
    public static func evaluateComposed(_ testCase: DecisionCase, instance: PolicyInstance, file: String? = nil) -> CaseResult {
        do {
            let request = try testCase.makeRequest()
            let verdict = instance.evaluate(request)
            return CaseResult(
                plugin: nil, file: file, name: testCase.name,
                failure: testCase.mismatch(outcome: verdict.outcome, headers: verdict.upstreamHeaders))
        } catch {
            return CaseResult(plugin: nil, file: file, name: testCase.name, failure: error.message)
        }
    }

    private static func runPluginTests(
        source: PluginSource, plugin: LoadedPlugin, index: Int, instance: PolicyInstance, spec: PolicySpec
    ) throws(PolicyLoadError) -> [CaseResult] {
        let lua = instance.lua
        let tests: LuaRef?
        do {
            tests = try lua.field(named: "tests", in: plugin.module)
        } catch {
            throw PolicyLoadError(step: .test, plugin: source.name, file: source.path, message: error.message)
        }
        guard let tests else { return [] }
        let cases: [DecisionCase]
        do {
            let json = try lua.exportJSON(tests)
            let value = try JSONDecoder().decode(ConfigValue.self, from: Data(json.utf8))
            guard case .array(let items) = value else {
                if case .table(let pairs) = value, pairs.isEmpty { return [] }
                throw CaseError("tests must be a list of cases")
            }
            cases = try items.enumerated().map { i, item throws(CaseError) in try DecisionCase(item, position: "test \(i + 1)") }
        } catch let error as CaseError {
            throw PolicyLoadError(step: .test, plugin: source.name, file: source.path, message: error.message)
        } catch {
            throw PolicyLoadError(step: .test, plugin: source.name, file: source.path, message: "\(error)")
        }
        var configured: [ConfigValue: PolicyInstance] = [:]
        var results: [CaseResult] = []
        for testCase in cases {
            var target = instance
            var targetIndex = index
            if let config = testCase.config {
                if let existing = configured[config] {
                    target = existing
                } else {
                    var single = source
                    single.config = config
                    let fresh = try PolicyInstance(
                        spec: PolicySpec(
                            plugins: [single], memoryCap: spec.memoryCap, instructionBudget: spec.instructionBudget,
                            hookDeadline: spec.hookDeadline, initDeadline: spec.initDeadline),
                        generationID: instance.generationID, stats: PolicyStats(), logger: Logger(label: "moongate.policy.test"))
                    configured[config] = fresh
                    target = fresh
                }
                targetIndex = 0
            }
            results.append(evaluateSingle(testCase, plugin: source.name, index: targetIndex, instance: target))
        }
        return results
    }

    private static func evaluateSingle(_ testCase: DecisionCase, plugin: String, index: Int, instance: PolicyInstance) -> CaseResult {
        do {
            let request = try testCase.makeRequest()
            let hook = testCase.hook.flatMap(Hook.init(rawValue:)) ?? (request.isTunnelRequest ? .connect : .route)
            let (outcome, edits) = instance.callSingle(plugin: index, hook: hook, request: request)
            var headers = request.headers
            SanitizationFloor.apply(edits, to: &headers)
            return CaseResult(plugin: plugin, file: nil, name: testCase.name, failure: testCase.mismatch(outcome: outcome, headers: headers))
        } catch {
            return CaseResult(plugin: plugin, file: nil, name: testCase.name, failure: error.message)
        }
    }
}

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
    /// - Throws: ``PolicyLoadError`` naming the step, plugin, file, line and failing test.
    public static func load(_ spec: PolicySpec, id: Int) throws(PolicyLoadError) -> PolicyGeneration {
        let scratch = try PolicyInstance(spec: spec, generationID: id, stats: PolicyStats(), logger: Logger(label: "moongate.policy.load"))
        let results = try PolicyTestRunner.run(spec, instance: scratch)
        if let failed = results.first(where: { !$0.passed }) {
            let plugin = failed.plugin
            // A fixture case names its own file; a plugin test, its plugin's.
            let file = failed.file ?? plugin.flatMap { name in spec.plugins.first { $0.name == name }?.path } ?? "-"
            throw PolicyLoadError(
                step: plugin == nil ? .fixture : .test, plugin: plugin, file: file, message: failed.failure ?? "",
                testName: failed.name)
        }
        return PolicyGeneration(id: id, spec: spec, testResults: results, loadedAt: wallClockSeconds())
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
