import CLuaShims
import Logging
import LuaKit

/// Loading a spec's plugins into a fresh Lua state: the state's limits and cluster names, then each
/// plugin in priority order.
extension PolicyInstance {
    /// Loads every plugin of `spec` that loads, skipping the others, and reports why each of those
    /// failed (`moongate validate`). The instance is nil only when no Lua state could be made.
    static func loadingEveryPlugin(
        _ spec: PolicySpec, generationID: Int, stats: PolicyStats, logger: Logger, scriptLogger: Logger
    ) -> (instance: PolicyInstance?, failures: [PolicyLoadError]) {
        do {
            let loaded = try loadPlugins(spec, scriptLogger: scriptLogger, keepGoing: true)
            let instance = PolicyInstance(
                lua: loaded.lua, plugins: loaded.plugins, spec: spec, generationID: generationID, stats: stats, logger: logger,
                scriptLog: loaded.log)
            return (instance, loaded.failures)
        } catch {
            return (nil, [error])
        }
    }

    /// A state with the spec's limits and clusters, and the plugins that loaded into it.
    /// - Parameter keepGoing: skip a plugin that fails (its error is returned) instead of throwing.
    static func loadPlugins(
        _ spec: PolicySpec, scriptLogger: Logger, keepGoing: Bool
    ) throws(PolicyLoadError) -> (lua: LuaState, plugins: [LoadedPlugin], failures: [PolicyLoadError], log: ScriptLog) {
        let lua: LuaState
        do {
            lua = try LuaState(memoryCap: spec.memoryCap, instructionBudget: spec.instructionBudget)
            lua.setDeadlines(hook: spec.hookDeadline, load: spec.initDeadline)
        } catch {
            throw PolicyLoadError(step: .compile, plugin: nil, file: "-", message: error.message)
        }
        var names: [UInt8] = []
        for cluster in spec.clusters { names += Array(cluster.utf8) + [0] }
        names.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                moon_set_clusters(lua.pointer, chars.baseAddress, chars.count, Int32(spec.clusters.count))
            }
        }
        lua.installDataFiles(folder: spec.dataFolder, files: spec.dataFiles)
        let log = ScriptLog(logger: scriptLogger, plugins: spec.plugins)
        var plugins: [LoadedPlugin] = []
        var failures: [PolicyLoadError] = []
        for (index, source) in spec.plugins.enumerated() {
            do {
                plugins.append(
                    try LoadedPlugin.load(source, index: index, hookDeadline: source.hookDeadline ?? spec.hookDeadline, into: lua, log: log))
            } catch {
                guard keepGoing else { throw error }
                failures.append(error)
            }
        }
        return (lua, plugins, failures, log)
    }
}
