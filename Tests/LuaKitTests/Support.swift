import LuaKit

/// Runs `source` in a fresh environment of a fresh state (chunk name `probe.lua`) and returns the
/// exported result as JSON.
func evaluate(_ source: String, cap: Int = 16 << 20, budget: Int = 1_000_000, deadline: Duration? = nil) throws -> String {
    let lua = try LuaState(memoryCap: cap, instructionBudget: budget)
    lua.setDeadlines(hook: deadline, load: deadline)
    let env = try lua.newEnvironment()
    guard let result = try lua.run(source, chunkName: "@probe.lua", in: env) else { return "null" }
    return try lua.exportJSON(result)
}

/// The error `source` ends with, or nil when it runs to the end.
func failure(_ source: String, cap: Int = 16 << 20, budget: Int = 1_000_000, deadline: Duration? = nil) -> LuaError? {
    do {
        _ = try evaluate(source, cap: cap, budget: budget, deadline: deadline)
        return nil
    } catch let error as LuaError {
        return error
    } catch {
        return nil
    }
}
