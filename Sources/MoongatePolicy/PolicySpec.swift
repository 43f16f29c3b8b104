import MoongateConfig

/// One plugin's script and settings, as read from disk.
public struct PluginSource: Sendable {
    public var name: String
    /// The path shown in errors (`plugins/connect_allowlist.lua`).
    public var path: String
    public var source: String
    public var priority: Int
    public var config: ConfigValue
    /// This plugin's own hook deadline (nil: the spec's).
    public var hookDeadline: Duration?

    /// The name Lua messages carry: the file's base name (Lua shortens long chunk names), so
    /// errors read `connect_allowlist.lua:42: …`; ``PolicyLoadError`` adds the full path.
    public var chunkName: String { String(path.split(separator: "/").last ?? Substring(path)) }

    /// Creates a plugin source.
    public init(
        name: String, path: String, source: String, priority: Int = 10, config: ConfigValue = .table([]),
        hookDeadline: Duration? = nil
    ) {
        self.name = name
        self.path = path
        self.source = source
        self.priority = priority
        self.config = config
        self.hookDeadline = hookDeadline
    }
}

/// A recorded-requests file replayed before a generation goes live.
public struct FixtureSource: Sendable {
    public var path: String
    public var text: String
    /// Creates a fixture.
    public init(path: String, text: String) {
        self.path = path
        self.text = text
    }
}

/// Everything one generation is made of: the plugins with their configs, the limits, the fixtures.
public struct PolicySpec: Sendable {
    public var plugins: [PluginSource]
    public var memoryCap: Int
    public var instructionBudget: Int
    /// How long one hook call may hold its event loop (a plugin may set its own).
    public var hookDeadline: Duration
    /// How long a module body or `init` may run while loading.
    public var initDeadline: Duration
    public var fixtures: [FixtureSource]
    /// The names of the configured clusters, sorted: `moongate.clusters()`, and what
    /// `moongate.route`, `moongate.tunnel_via` and the clusters tests expect are checked against.
    /// Empty means unknown (a spec built by hand): nothing is checked.
    public var clusters: [String]
    /// The folder relative data-file paths resolve against (the config file's), and the data files
    /// the generation loaded (filled by ``PolicyGeneration/load(_:id:)``; read from disk when empty).
    public var dataFolder: String = "."
    public var dataFiles: [PolicyDataFile] = []

    /// Creates a spec.
    public init(
        plugins: [PluginSource], memoryCap: Int = 16 << 20, instructionBudget: Int = 1_000_000,
        hookDeadline: Duration = .milliseconds(10), initDeadline: Duration = .seconds(1), fixtures: [FixtureSource] = [],
        clusters: [String] = []
    ) {
        self.plugins = plugins.sorted { $0.priority < $1.priority }
        self.memoryCap = memoryCap
        self.instructionBudget = instructionBudget
        self.hookDeadline = hookDeadline
        self.initDeadline = initDeadline
        self.fixtures = fixtures
        self.clusters = Array(Set(clusters)).sorted()
    }

    /// Reads every script and fixture a policy config names; the spec's clusters are the config's.
    /// - Throws: ``PolicyLoadError`` at step `read` naming the file that could not be read.
    public static func read(_ config: PolicyConfig) throws(PolicyLoadError) -> PolicySpec {
        var plugins: [PluginSource] = []
        for plugin in config.plugins {
            do {
                let text = try readFile(plugin.file)
                plugins.append(
                    PluginSource(
                        name: plugin.name, path: plugin.file, source: text, priority: plugin.priority, config: plugin.config,
                        hookDeadline: plugin.hookDeadline))
            } catch {
                throw PolicyLoadError(step: .read, plugin: plugin.name, file: plugin.file, message: error.message)
            }
        }
        var fixtures: [FixtureSource] = []
        for path in config.fixtures {
            do {
                fixtures.append(FixtureSource(path: path, text: try readFile(path)))
            } catch {
                throw PolicyLoadError(step: .read, plugin: nil, file: path, message: error.message)
            }
        }
        var spec = PolicySpec(
            plugins: plugins, memoryCap: config.memoryCap, instructionBudget: config.instructionBudget,
            hookDeadline: config.hookDeadline, initDeadline: config.initDeadline, fixtures: fixtures,
            clusters: config.clusterNames)
        spec.dataFolder = config.folder
        return spec
    }
}

/// Why a generation was not loaded: the step, plugin, file, line, message and failing test.
public struct PolicyLoadError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The loading steps, in order.
    public enum Step: String, Sendable {
        case read, compile, initialize = "init", config, test, fixture
    }

    public let step: Step
    public let plugin: String?
    public let file: String
    public let line: Int?
    public let message: String
    /// The failing test or fixture case, for steps `test` and `fixture`.
    public let testName: String?

    /// Creates an error; the line is read from the message (`file:12: …`) when not given.
    public init(step: Step, plugin: String?, file: String, line: Int? = nil, message: String, testName: String? = nil) {
        self.init(step: step, plugin: plugin, file: file, knownLine: line ?? PolicyLoadError.line(in: message), message: message, testName: testName)
    }

    /// Creates an error whose line is known (or known to be unknown): the message is not read.
    init(step: Step, plugin: String?, file: String, knownLine: Int?, message: String, testName: String?) {
        self.step = step
        self.plugin = plugin
        self.file = file
        self.line = knownLine
        self.message = message
        self.testName = testName
    }

    /// The first `name:LINE:` number in a Lua message.
    static func line(in message: String) -> Int? {
        let parts = message.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 3 else { return nil }
        return Int(parts[1])
    }

    public var description: String {
        var text = file + (line.map { ":\($0)" } ?? "") + ": [\(step.rawValue)]"
        if let plugin { text += " plugin \(plugin)" }
        if let testName { text += (plugin == nil ? " " : ", ") + "test '\(testName)'" }
        return text + ": \(message)"
    }
}
