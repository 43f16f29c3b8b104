import Logging
import LuaKit
import MoongateConfig

/// Runs every plugin's own `tests` table and the spec's fixtures. A generation goes live only when
/// every case passes.
public enum PolicyTestRunner {
    /// Runs every loaded plugin's `tests` (each case against that plugin alone, raw hook answer, with
    /// the case's own config and clusters when it has them) and every fixture line (against the whole
    /// composition). A malformed case or fixture line is a failed result naming its file and line; it
    /// does not stop the others.
    /// - Parameter replayFixtures: false to only check that the fixtures parse (when some plugin did
    ///   not load, the composition they describe does not exist).
    public static func run(_ spec: PolicySpec, instance: PolicyInstance, replayFixtures: Bool = true) -> [CaseResult] {
        var results: [CaseResult] = []
        for plugin in instance.plugins {
            results += runPluginTests(plugin, instance: instance)
        }
        for fixture in spec.fixtures {
            for line in DecisionCase.fixtureLines(fixture.text) {
                switch line.parsed {
                case .failure(let error):
                    results.append(CaseResult(plugin: nil, file: fixture.path, line: line.line, name: "line \(line.line)", failure: error.message))
                case .success(let testCase) where replayFixtures:
                    results.append(evaluateComposed(testCase, instance: instance, file: fixture.path))
                case .success:
                    break
                }
            }
        }
        return results
    }

    /// A case against the whole composition (what the proxy would do).
    public static func evaluateComposed(_ testCase: DecisionCase, instance: PolicyInstance, file: String? = nil) -> CaseResult {
        func result(_ failure: String?) -> CaseResult {
            CaseResult(plugin: nil, file: file, line: testCase.line, name: testCase.name, failure: failure)
        }
        if let problem = testCase.clusterProblem(known: instance.spec.clusters) { return result(problem) }
        do {
            let request = try testCase.makeRequest()
            let verdict = instance.evaluate(request)
            return result(testCase.mismatch(outcome: verdict.outcome, headers: verdict.upstreamHeaders))
        } catch {
            return result(error.message)
        }
    }

    private static func runPluginTests(_ plugin: LoadedPlugin, instance: PolicyInstance) -> [CaseResult] {
        let source = plugin.source
        func failure(_ name: String, line: Int?, _ message: String) -> CaseResult {
            CaseResult(plugin: source.name, file: source.path, line: line, name: name, failure: message)
        }
        let items: [ConfigValue]
        do {
            guard let tests = try instance.lua.field(named: "tests", in: plugin.module) else { return [] }
            let json = try instance.lua.exportJSON(tests)
            switch try? JSONValueParser.parse(Substring(json)) {
            case .array(let list)?: items = list
            case .table(let pairs)? where pairs.isEmpty: return []
            default:
                return [failure("tests", line: TestCaseLines.tableLine(in: source.source), "tests must be a list of cases")]
            }
        } catch {
            return [failure("tests", line: TestCaseLines.tableLine(in: source.source), error.message)]
        }
        let lines = TestCaseLines.lines(in: source.source, count: items.count)
        var instances = CaseInstances(base: instance, plugin: plugin)
        var results: [CaseResult] = []
        for (index, item) in items.enumerated() {
            let line = lines?[index]
            let position = "test \(index + 1)"
            do {
                let testCase = try DecisionCase(item, position: position, origin: .pluginTest, line: line)
                results.append(evaluateSingle(testCase, plugin: plugin, instances: &instances))
            } catch {
                results.append(failure(item["name"]?.stringValue ?? position, line: line, error.message))
            }
        }
        return results
    }

    private static func evaluateSingle(_ testCase: DecisionCase, plugin: LoadedPlugin, instances: inout CaseInstances) -> CaseResult {
        func result(_ failure: String?) -> CaseResult {
            CaseResult(plugin: plugin.name, file: plugin.path, line: testCase.line, name: testCase.name, failure: failure)
        }
        let loaded = instances.instance(for: testCase)
        if let expected = testCase.expectError {
            switch loaded {
            case .failure(let error) where error.message.contains(expected): return result(nil)
            case .failure(let error): return result("expected the plugin to refuse to load with '\(expected)', got: \(error.message)")
            case .success: return result("expected the plugin to refuse to load with '\(expected)', but it loaded")
            }
        }
        let target: (instance: PolicyInstance, index: Int)
        switch loaded {
        case .success(let found): target = found
        case .failure(let error): return result("the case's config does not load: \(error.message)")
        }
        if let problem = testCase.clusterProblem(known: target.instance.spec.clusters) { return result(problem) }
        do {
            let request = try testCase.makeRequest()
            let hook = testCase.hook.flatMap(Hook.init(rawValue:)) ?? (request.isTunnelRequest ? .connect : .route)
            let (outcome, edits) = target.instance.callSingle(plugin: target.index, hook: hook, request: request)
            var headers = request.headers
            SanitizationFloor.apply(edits, to: &headers)
            return result(testCase.mismatch(outcome: outcome, headers: headers))
        } catch {
            return result(error.message)
        }
    }
}

/// The instances a plugin's test cases run in: the generation's own, or one per distinct case
/// `config` and `clusters` (the plugin alone, loaded with them), made once and reused.
private struct CaseInstances {
    private struct Key: Hashable {
        let config: ConfigValue?
        let clusters: [String]?
    }

    let base: PolicyInstance
    let plugin: LoadedPlugin
    private var made: [Key: Result<PolicyInstance, PolicyLoadError>] = [:]

    init(base: PolicyInstance, plugin: LoadedPlugin) {
        self.base = base
        self.plugin = plugin
    }

    /// The instance and the plugin's index in it, or why the plugin did not load for this case.
    mutating func instance(for testCase: DecisionCase) -> Result<(instance: PolicyInstance, index: Int), PolicyLoadError> {
        if testCase.config == nil && testCase.clusters == nil && testCase.expectError == nil,
            let index = base.plugins.firstIndex(where: { $0.index == plugin.index })
        {
            return .success((base, index))
        }
        let key = Key(config: testCase.config, clusters: testCase.clusters)
        let loaded: Result<PolicyInstance, PolicyLoadError>
        if let existing = made[key] {
            loaded = existing
        } else {
            var single = plugin.source
            if let config = testCase.config { single.config = config }
            let spec = base.spec
            var caseSpec = PolicySpec(
                plugins: [single], memoryCap: spec.memoryCap, instructionBudget: spec.instructionBudget,
                hookDeadline: spec.hookDeadline, initDeadline: spec.initDeadline, clusters: testCase.clusters ?? spec.clusters)
            caseSpec.dataFolder = spec.dataFolder
            do {
                loaded = .success(
                    try PolicyInstance(
                        spec: caseSpec, generationID: base.generationID, stats: PolicyStats(),
                        logger: base.faultLogger, scriptLogger: base.scriptLogger))
            } catch {
                loaded = .failure(error)
            }
            made[key] = loaded
        }
        return loaded.map { ($0, 0) }
    }
}
