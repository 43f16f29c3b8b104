import CLuaShims
import LuaKit
import MoongateConfig

/// A plugin loaded into one Lua state: its environment and the references of its hooks.
struct LoadedPlugin {
    /// What it was loaded from (name, path, source, config).
    let source: PluginSource
    /// Its position in the spec: the index its calls run under, which names its log lines.
    let index: Int
    let environment: LuaRef
    let module: LuaRef
    let hooks: [Hook: LuaRef]
    /// How long one call of a hook may run, in nanoseconds.
    let hookDeadline: UInt64

    var name: String { source.name }
    var path: String { source.path }

    /// Compiles and runs the plugin's file in a fresh environment, reads its hooks, runs
    /// `init(config)` and freezes its globals. Lines the module body and `init` log are drained into
    /// `log`, also when loading fails.
    static func load(
        _ source: PluginSource, index: Int, hookDeadline: Duration, into lua: LuaState, log: ScriptLog
    ) throws(PolicyLoadError) -> LoadedPlugin {
        moon_set_plugin(lua.pointer, Int32(index))
        moon_set_plugin_deadline(lua.pointer, LuaState.nanoseconds(hookDeadline))
        defer { log.drain(lua.pointer) }
        func failure(_ step: PolicyLoadError.Step, _ error: LuaError) -> PolicyLoadError {
            PolicyLoadError(step: error.kind == .syntax ? .compile : step, plugin: source.name, file: source.path, message: error.message)
        }
        let env: LuaRef
        let module: LuaRef?
        do {
            env = try lua.newEnvironment()
            module = try lua.run(source.source, chunkName: "@" + source.chunkName, in: env)
        } catch {
            throw failure(.compile, error)
        }
        guard let module else {
            throw PolicyLoadError(
                step: .compile, plugin: source.name, file: source.path,
                message: "a plugin must return a table of hooks (return { route = function(req) ... end })")
        }
        var hooks: [Hook: LuaRef] = [:]
        for hook in Hook.allCases {
            do {
                if let ref = try lua.function(named: hook.rawValue, in: module) { hooks[hook] = ref }
            } catch {
                throw PolicyLoadError(step: .compile, plugin: source.name, file: source.path, message: "\(source.path): \(error.message)")
            }
        }
        if let initialize = hooks[.initialize] {
            do {
                let configEnv = try lua.newEnvironment()
                let value = try lua.run(LuaLiteral.chunk(for: source.config), chunkName: "=config of \(source.name)", in: configEnv)
                try lua.call(initialize, with: value)
                if let value { lua.release(value) }
                lua.release(configEnv)
            } catch {
                throw failure(.initialize, error)
            }
        }
        do {
            try lua.freeze(env)
        } catch {
            throw failure(.initialize, error)
        }
        return LoadedPlugin(
            source: source, index: index, environment: env, module: module, hooks: hooks,
            hookDeadline: LuaState.nanoseconds(hookDeadline))
    }
}
