import LuaKit
import Testing

@Suite("Lua sandbox")
struct SandboxTests {
    @Test("forbidden libraries and functions are absent", arguments: [
        "io", "os", "package", "require", "debug", "dofile", "loadfile", "coroutine", "rawset",
        "string.dump",
    ])
    func forbiddenNameIsAbsent(name: String) throws {
        let json = try evaluate("return { t = type(\(name)) }")
        #expect(json == #"{"t":"nil"}"#)
    }

    @Test("the allowed libraries are present")
    func allowedLibrariesArePresent() throws {
        let json = try evaluate(
            "return { type(string.format), type(table.concat), type(math.floor), type(utf8.char), type(moongate.route), type(pcall), "
                + "type(print), type(moongate.log), type(moongate.clusters) }"
        )
        #expect(json == #"["function","function","function","function","function","function","function","function","function"]"#)
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

    // MARK: - Issue 9: what the sandbox must hold

    @Test("a removed string function is absent through string.x and through a string's methods", arguments: ["dump"])
    func removedStringFunctionIsAbsentBothWays(name: String) throws {
        let json = try evaluate("return { type(string.\(name)), type((\"\").\(name)) }")
        #expect(json == #"["nil","nil"]"#)
    }

    @Test("a string's methods are the sandbox's own library functions")
    func stringMethodsAreTheFilteredLibrary() throws {
        let json = try evaluate(
            "return { (\"\").rep == string.rep, (\"\").find == string.find, (\"\").gsub == string.gsub, (\"\").upper == string.upper }")
        #expect(json == "[true,true,true,true]")
    }

    @Test("after a memory error the script caught, an ordinary error is reported as runtime, not memory")
    func memoryFlagIsClearedAfterRecovery() {
        let error = failure(
            "local ok = pcall(function() local t = {} for i = 1, 1e7 do t[i] = i end end)\nassert(not ok)\nerror('ordinary')",
            cap: 2 << 20, budget: 100_000_000)
        #expect(error?.kind == .runtime)
        #expect(error?.message == "probe.lua:3: ordinary")
    }

    @Test("a table.move over 2^63 elements is stopped by the deadline, with file and line")
    func hugeTableMoveHitsDeadline() {
        let error = failure("local x = 1\ntable.move({}, 1, math.maxinteger - 2, 2)", budget: 0, deadline: .milliseconds(20))
        #expect(error?.kind == .deadline)
        #expect(error?.message.hasPrefix("probe.lua:2:") == true)
        #expect(error?.message.contains("deadline of 20 ms") == true)
    }

    @Test("a __len of 2^62 cannot make table.insert or table.remove loop in C", arguments: ["insert(t, 1, 'x')", "remove(t, 1)"])
    func hugeLengthCannotLoop(call: String) {
        let error = failure(
            "local t = setmetatable({}, { __len = function() return 1 << 62 end })\ntable.\(call)", budget: 0,
            deadline: .milliseconds(20))
        #expect(error?.kind == .deadline)
    }

    @Test("sorting a large table is stopped by the deadline, with or without a comparator", arguments: [false, true])
    func longSortHitsDeadline(comparator: Bool) {
        let source = """
            local t = {}
            for i = 1, 300000 do t[i] = (i * 7919) % 300007 end
            table.sort(t\(comparator ? ", function(a, b) return a > b end" : ""))
            """
        let error = failure(source, budget: 0, deadline: .milliseconds(5))
        #expect(error?.kind == .deadline)
    }

    @Test("the table functions keep their results", arguments: [
        ("local t = {1, 2, 3}; table.insert(t, 1, 0); table.insert(t, 9); return t", "[0,1,2,3,9]"),
        ("local t = {1, 2, 3}; local r = table.remove(t, 1); return { r, t[1], t[2], #t }", "[1,2,3,2]"),
        ("local t = {1, 2, 3}; local r = table.remove(t); return { r, #t }", "[3,2]"),
        ("return table.move({1, 2, 3}, 1, 3, 2)", "[1,1,2,3]"),
        ("return table.move({1, 2, 3}, 2, 3, 1)", "[2,3,3]"),
        ("return table.move({1, 2, 3}, 1, 3, 1, {})", "[1,2,3]"),
        ("return { table.concat({1, 'b', 3}, ', ') }", #"["1, b, 3"]"#),
        ("return { table.concat({1, 2, 3}, '-', 2, 3) }", #"["2-3"]"#),
        ("local t = {5, 3, 9, 1, 7, 3}; table.sort(t); return t", "[1,3,3,5,7,9]"),
        ("local t = {'b', 'c', 'a'}; table.sort(t, function(a, b) return a > b end); return t", #"["c","b","a"]"#),
        ("return { pcall(table.concat, {1, {}, 3}) }", #"[false,"invalid value (at index 2) in table for 'concat'"]"#),
        ("return { pcall(function() table.insert({1}, 5, 'x') end) }", #"[false,"probe.lua:1: bad argument #2 to 'insert' (position out of bounds)"]"#),
    ])
    func tableFunctionsBehaveAsStock(source: String, expected: String) throws {
        #expect(try evaluate(source) == expected)
    }

    @Test("a loop of linear string calls on a large string is stopped by the deadline")
    func loopOfLargeStringCallsHitsDeadline() {
        let error = failure(
            "local s = string.rep('a', 1000000)\nwhile true do local u = s:upper() end", budget: 0, deadline: .milliseconds(20))
        #expect(error?.kind == .deadline)
        #expect(error?.message.hasPrefix("probe.lua:2:") == true)
    }

    @Test("a loop of large concatenations is stopped by the deadline")
    func loopOfLargeConcatenationsHitsDeadline() {
        let error = failure(
            "local s = string.rep('a', 500000)\nlocal n = 0\nwhile true do local u = s .. n; n = n + 1 end", budget: 0,
            deadline: .milliseconds(20))
        #expect(error?.kind == .deadline)
    }

    @Test("pcall cannot swallow the deadline")
    func pcallCannotSwallowDeadline() {
        let error = failure(
            "while true do pcall(table.move, {}, 1, math.maxinteger - 2, 2) end", budget: 0, deadline: .milliseconds(20))
        #expect(error?.kind == .deadline)
    }

    @Test("string.rep builds large results and refuses results over the string limit")
    func stringRepIsBounded() throws {
        #expect(try evaluate("local s = string.rep('ab', 300000, ',') return { #s, s:sub(1, 7), s:sub(-5) }") == #"[899999,"ab,ab,a","ab,ab"]"#)
        #expect(try evaluate("return { string.rep('x', 0), string.rep('', 1e9), string.rep('ab', 3) }") == #"["","","ababab"]"#)
        let error = failure("return string.rep('x', (1 << 20) + 1)")
        #expect(error?.kind == .memory)
    }

    @Test("no string over the sandbox's limit can be built by concatenation")
    func concatenationIsBoundedByTheStringLimit() {
        let error = failure("local s = string.rep('x', 1 << 20)\nlocal t = s .. s")
        #expect(error?.kind == .memory)
        #expect(error?.message.hasPrefix("probe.lua:2:") == true)
        #expect(error?.message.contains("string limit") == true)
    }

    @Test("load refuses sources over 64 KiB")
    func loadIsBounded() throws {
        let json = try evaluate("return { pcall(load, string.rep(' ', 70000)) }")
        #expect(json.contains("over the limit"))
    }

    @Test("an xpcall message handler runs under the budget and the deadline (it ran with hooks off)")
    func xpcallHandlerIsBounded() {
        let looping = failure(
            "local x = 1\nxpcall(function() while true do end end, function(e) while true do end end)", budget: 100_000,
            deadline: .milliseconds(50))
        #expect(looping?.kind == .budget)
        let slow = failure("xpcall(error, function(e) local n = 0 while true do n = n + 1 end end)", budget: 0, deadline: .milliseconds(20))
        #expect(slow?.kind == .deadline)
    }

    @Test("xpcall keeps its results: values on success, false and the handler's answer on an error")
    func xpcallResults() throws {
        #expect(try evaluate("return { xpcall(function(a, b) return a + b, 'ok' end, function(e) return e end, 2, 3) }") == #"[true,5,"ok"]"#)
        #expect(try evaluate("return { xpcall(function() error('boom', 0) end, function(e) return 'handled ' .. e end) }") == #"[false,"handled boom"]"#)
        #expect(try evaluate("return { xpcall(error, function(e) error('again', 0) end, 'x') }") == #"[false,"again"]"#)
    }

    @Test("after a memory fault the state's garbage is freed, so the next call of the same function works")
    func memoryFaultDoesNotPoisonTheNextCall() throws {
        let lua = try LuaState(memoryCap: 4 << 20, instructionBudget: 0)
        let env = try lua.newEnvironment()
        let module = try #require(try lua.run(
            "return { bomb = function(big) local t = {} if big then while true do t[#t + 1] = {#t, #t, #t, #t} end end local s = {} for i = 1, 1000 do s[i] = {i} end end }",
            chunkName: "@bomb.lua", in: env))
        let bomb = try #require(try lua.function(named: "bomb", in: module))
        let yes = try #require(try lua.run("return true", chunkName: "@t.lua", in: env))
        do {
            try lua.call(bomb, with: yes)
            Issue.record("the bomb must hit the cap")
        } catch {
            #expect(error.kind == .memory)
        }
        #expect(lua.heapBytes < 2 << 20)
        try lua.call(bomb)  // allocates 1,000 small tables: fails if the bomb's table is still alive
    }
}

