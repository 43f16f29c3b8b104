import LuaKit
import MoongateConfig

/// A plugin loaded into one Lua state: its environment and the references of its hooks.
struct LoadedPlugin {
    let name: String
    let path: String
    let environment: LuaRef
    let module: LuaRef
    let hooks: [Hook: LuaRef]
    /// How long one call of a hook may run, in nanoseconds.
    let hookDeadline: UInt64

    /// Compiles and runs the plugin's file in a fresh environment, reads its hooks, runs
    /// `init(config)` and freezes its globals.
    static func load(
        _ source: PluginSource, config: ConfigValue, hookDeadline: Duration, into lua: LuaState
    ) throws(PolicyLoadError) -> LoadedPlugin {
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
                let value = try lua.run(LuaLiteral.chunk(for: config), chunkName: "=config of \(source.name)", in: configEnv)
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
            name: source.name, path: source.path, environment: env, module: module, hooks: hooks,
            hookDeadline: LuaState.nanoseconds(hookDeadline))
    }
}
