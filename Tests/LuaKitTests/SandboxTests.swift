import LuaKit
import Testing

/// Runs `source` in a fresh environment of a fresh state and returns the exported result.
private func evaluate(_ source: String, cap: Int = 16 << 20, budget: Int = 1_000_000) throws -> String {
    let lua = try LuaState(memoryCap: cap, instructionBudget: budget)
    let env = try lua.newEnvironment()
    guard let result = try lua.run(source, chunkName: "@probe.lua", in: env) else { return "null" }
    return try lua.exportJSON(result)
}

private func failure(_ source: String, cap: Int = 16 << 20, budget: Int = 1_000_000) -> LuaError? {
    do {
        _ = try evaluate(source, cap: cap, budget: budget)
        return nil
    } catch let error as LuaError {
        return error
    } catch {
        return nil
    }
}

@Suite("Lua sandbox")
struct SandboxTests {
    @Test("forbidden libraries and functions are absent", arguments: [
        "io", "os", "package", "require", "debug", "dofile", "loadfile", "coroutine", "rawset",
        "string.dump", "print",
    ])
    func forbiddenNameIsAbsent(name: String) throws {
        let json = try evaluate("return { t = type(\(name)) }")
        #expect(json == #"{"t":"nil"}"#)
    }

    @Test("the allowed libraries are present")
    func allowedLibrariesArePresent() throws {
        let json = try evaluate(
            "return { type(string.format), type(table.concat), type(math.floor), type(utf8.char), type(moongate.route), type(pcall) }"
        )
        #expect(json == #"["function","function","function","function","function","function"]"#)
    }

    @Test("a binary chunk never loads")
    func binaryChunkIsRefused() throws {
        let json = try evaluate(#"local f, err = load("\27Lua\84\0", "x", "b"); return { f = f == nil, err = err }"#)
        #expect(json.contains("attempt to load a binary chunk"))
        #expect(json.contains(#""f":true"#))
    }

    @Test("load of text runs in the plugin's own environment, not the real globals")
    func loadUsesSandboxEnvironment() throws {
        let json = try evaluate(#"return { t = load("return type(io)")() }"#)
        #expect(json == #"{"t":"nil"}"#)
    }

    @Test("collectgarbage allows only count")
    func collectGarbageOnlyCounts() throws {
        #expect(try evaluate("return { ok = type(collectgarbage('count')) }") == #"{"ok":"number"}"#)
        let error = failure("collectgarbage('collect')")
        #expect(error?.message.contains("only \"count\"") == true)
    }

    @Test("a runaway loop is stopped with the script name and line")
    func runawayLoopIsStopped() {
        let error = failure("local x = 0\nwhile true do x = x + 1 end", budget: 100_000)
        #expect(error?.kind == .budget)
        #expect(error?.message.hasPrefix("probe.lua:2:") == true)
        #expect(error?.message.contains("instruction budget") == true)
    }

    @Test("pcall cannot swallow the budget")
    func pcallCannotSwallowBudget() {
        let error = failure("while true do pcall(function() while true do end end) end", budget: 100_000)
        #expect(error?.kind == .budget)
    }

    @Test("a 1 GiB allocation is refused at the cap")
    func gigabyteAllocationIsRefused() {
        let error = failure("local s = string.rep('x', 1 << 30)\nreturn #s")
        #expect(error?.kind == .memory)
        #expect(error?.message.hasPrefix("probe.lua:1:") == true)
        #expect(error?.message.contains("string limit") == true)
    }

    @Test("growing a table past the cap is a memory error with a line, and the state survives")
    func tableBombHitsCap() throws {
        let lua = try LuaState(memoryCap: 2 << 20, instructionBudget: 50_000_000)
        let env = try lua.newEnvironment()
        #expect(throws: LuaError.self) {
            try lua.run("local t = {}\nfor i = 1, 1e8 do t[i] = tostring(i) end", chunkName: "@bomb.lua", in: env)
        }
        do {
            try lua.run("local t = {}\nfor i = 1, 1e8 do t[i] = tostring(i) end", chunkName: "@bomb.lua", in: env)
        } catch {
            #expect(error.kind == .memory)
            #expect(error.message.hasPrefix("bomb.lua:2:"))
        }
        lua.collectGarbage()
        #expect(lua.heapBytes < 2 << 20)
        let after = try lua.run("return { ok = 1 + 1 }", chunkName: "@after.lua", in: env)
        #expect(try lua.exportJSON(after!) == #"{"ok":2}"#)
    }

    @Test("a syntax error names the file and line")
    func syntaxErrorNamesFileAndLine() {
        let error = failure("local x = \nreturn x +")
        #expect(error?.kind == .syntax)
        #expect(error?.message.hasPrefix("probe.lua:2:") == true)
    }

    @Test("__gc metamethods are refused")
    func finalizersAreRefused() {
        let error = failure("setmetatable({}, { __gc = function() while true do end end })")
        #expect(error?.message.contains("__gc") == true)
    }

    @Test("the string metatable cannot be reached or poisoned")
    func stringMetatableIsProtected() throws {
        #expect(try evaluate("return { mt = getmetatable('') }") == #"{"mt":false}"#)
        let error = failure("string.upper = function() return 'pwned' end")
        #expect(error?.message.contains("read-only") == true)
    }

    @Test("a global written after load is an error, so nothing leaks between calls")
    func frozenEnvironmentRefusesGlobals() throws {
        let lua = try LuaState()
        let env = try lua.newEnvironment()
        let module = try lua.run(
            "local M = {}\nfunction M.hook() counter = (counter or 0) + 1 end\nfunction M.read() return counter end\nreturn M",
            chunkName: "@leak.lua", in: env)
        try lua.freeze(env)
        let hook = try #require(try lua.function(named: "hook", in: module!))
        do {
            try lua.call(hook)
            Issue.record("writing a global after load must fail")
        } catch {
            #expect(error.kind == .runtime)
            #expect(error.message.hasPrefix("leak.lua:2:"))
            #expect(error.message.contains("attempt to set global 'counter'"))
        }
    }

    @Test("a field that is not a function is reported by name")
    func nonFunctionHookIsReported() throws {
        let lua = try LuaState()
        let env = try lua.newEnvironment()
        let module = try #require(try lua.run("return { route = 42 }", chunkName: "@m.lua", in: env))
        #expect(throws: LuaError.self) { try lua.function(named: "route", in: module) }
        #expect(try lua.function(named: "connect", in: module) == nil)
    }
}
