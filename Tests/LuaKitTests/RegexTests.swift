import LuaKit
import Testing

/// `all(...)` packs every value it is given, nil written as "nil", so the JSON export keeps the
/// positions of absent results. It shares line 1 with the probe, so error lines are the probe's own.
private let prelude =
    "local function all(...) local t = {} for i = 1, select('#', ...) do "
    + "local v = select(i, ...) if v == nil then v = 'nil' end t[i] = v end return t end "

/// `evaluate` and `failure` (Support.swift) with the prelude in front.
private func evaluateAll(_ source: String, cap: Int = 16 << 20, budget: Int = 1_000_000, deadline: Duration? = nil) throws -> String {
    try evaluate(prelude + source, cap: cap, budget: budget, deadline: deadline)
}

private func failureAll(_ source: String, cap: Int = 16 << 20, budget: Int = 1_000_000, deadline: Duration? = nil) -> LuaError? {
    failure(prelude + source, cap: cap, budget: budget, deadline: deadline)
}

@Suite("moongate.regex")
struct RegexTests {
    @Test("match, find and test answer like string.match and string.find", arguments: [
        // no groups: the whole match; none: a single nil
        ("return all(moongate.regex('b+'):match('aabbbcc'))", #"["bbb"]"#),
        ("return all(moongate.regex('b+'):find('aabbbcc'))", "[3,5]"),
        ("return all(moongate.regex('b+'):match('xyz'))", #"["nil"]"#),
        ("return all(moongate.regex('b+'):find('xyz'))", #"["nil"]"#),
        ("local re = moongate.regex('b+') return all(re:test('abc'), re:test('xyz'))", "[true,false]"),
        // groups: the captures, after the positions for find
        (#"return all(moongate.regex('(\\w+)=(\\w*)'):match('  key=value; x'))"#, #"["key","value"]"#),
        (#"return all(moongate.regex('(\\w+)=(\\w*)'):find('  key=value; x'))"#, #"[3,11,"key","value"]"#),
        (#"return all(moongate.regex('(\\w+)=(\\w*)'):match('k=;'))"#, #"["k",""]"#),
        // a group that did not take part is false
        ("return all(moongate.regex('(foo)|(bar)baz'):match('xbarbazy'))", #"[false,"bar"]"#),
        ("return all(moongate.regex('(foo)|(bar)baz'):find('xbarbazy'))", #"[2,7,false,"bar"]"#),
        ("return all(moongate.regex('a(x)?b'):match('ab'))", "[false]"),
        ("return all(moongate.regex('a(x)?b'):match('axb'))", #"["x"]"#),
        // empty matches
        ("return all(moongate.regex('x*'):find('abc'))", "[1,0]"),
        ("return all(moongate.regex('$'):find('abc'))", "[4,3]"),
        // NUL bytes in the pattern and the subject
        ("return all(moongate.regex('a\\0b'):find('xa\\0b'))", "[2,4]"),
        // 40 groups (more than fit the C stack buffer)
        (
            "local t = all(moongate.regex(string.rep('(x)', 40)):match(string.rep('x', 40))) return { #t, t[1], t[40] }",
            #"[40,"x","x"]"#
        ),
    ])
    func matchFindTest(source: String, expected: String) throws {
        #expect(try evaluateAll(source) == expected)
    }

    @Test("init counts like string.find's", arguments: [
        ("return all(moongate.regex('[0-9]+'):find('a1b22c333', 3))", "[4,5]"),
        ("return all(moongate.regex('[0-9]+'):find('a1b22c333', -3))", "[7,9]"),
        ("return all(moongate.regex('[0-9]+'):find('a1b22c333', -100))", "[2,2]"),
        ("return all(moongate.regex('[0-9]+'):find('a1b22c333', 0))", "[2,2]"),
        ("return all(moongate.regex('[0-9]+'):find('a1b22c333', 10))", #"["nil"]"#),
        ("return all(moongate.regex('[0-9]+'):match('a1b22c333', 8))", #"["33"]"#),
        ("return all(moongate.regex('x*'):find('abc', 4))", "[4,3]"),
        ("return all(moongate.regex('x*'):find('abc', 5))", #"["nil"]"#),
    ])
    func initLikeStringFind(source: String, expected: String) throws {
        #expect(try evaluateAll(source) == expected)
    }

    @Test("every init from -12 to 12 finds what string.find finds")
    func initAgreesWithStringFind() throws {
        let source = """
            local re, s, same = moongate.regex('[0-9]+'), 'a1b22c333', true
            for i = -12, 12 do
              local a, b = re:find(s, i)
              local c, d = string.find(s, '%d+', i)
              same = same and a == c and b == d
            end
            return { same }
            """
        #expect(try evaluateAll(source) == "[true]")
    }

    @Test("^ anchors at the subject's start, not at init; the bytes before init are context")
    func anchorsSeeTheWholeSubject() throws {
        #expect(try evaluateAll("return all(moongate.regex('^b'):find('ab', 2))") == #"["nil"]"#)
        #expect(try evaluateAll(#"return all(moongate.regex('\\bb'):find('a b', 3))"#) == "[3,3]")
        #expect(try evaluateAll(#"return all(moongate.regex('\\Bb'):find('ab', 2))"#) == "[2,2]")
    }

    @Test("caseless matching, by option or inline")
    func caseless() throws {
        let source = """
            return {
              moongate.regex('hello'):test('HeLLo'),
              moongate.regex('hello', { caseless = true }):test('HeLLo'),
              moongate.regex('hello', { caseless = false }):test('HeLLo'),
              moongate.regex('(?i)hello'):test('HELLO'),
              moongate.regex('(?i)É'):test('é'),
            }
            """
        #expect(try evaluateAll(source) == "[false,true,false,true,true]")
    }

    @Test("UTF-8 by default, Latin-1 bytes by option")
    func utf8AndLatin1() throws {
        let source = #"""
            return {
              moongate.regex('^.$'):test('é'),
              moongate.regex('^.$', { latin1 = true }):test('é'),
              moongate.regex('^..$', { latin1 = true }):test('é'),
              moongate.regex('^.$'):test('\xe9'),
              moongate.regex('^\xe9$', { latin1 = true }):test('\xe9'),
              moongate.regex('\xff', { latin1 = true }):test('a\xffb'),
            }
            """#
        #expect(try evaluateAll(source) == "[true,false,true,false,true,true]")
    }

    @Test("a regex prints its pattern and options, and its metatable is hidden")
    func tostringAndHiddenMetatable() throws {
        let source = """
            return {
              tostring(moongate.regex('a+', { caseless = true, latin1 = true })),
              getmetatable(moongate.regex('a')),
              type(moongate.regex('a')),
            }
            """
        #expect(try evaluateAll(source) == #"["moongate.regex('a+', caseless, latin1)",false,"userdata"]"#)
        let error = failureAll("local re = moongate.regex('a')\nre.match = print")
        #expect(error?.kind == .runtime)
    }

    @Test("a pattern RE2 refuses is an error naming the pattern and RE2's reason", arguments: [
        ("(abc", "missing ): (abc"),
        ("a)", "unexpected ): a)"),
        ("[z-a]", "invalid character class range: z-a"),
        ("x{2,1}", "invalid repetition size: {2,1}"),
        ("*a", "no argument for repetition operator: *"),
        ("a**", "bad repetition operator: **"),
        (#"\\1"#, #"invalid escape sequence: \1"#),
        ("(?=x)", "invalid perl operator: (?="),
        (#"\xff"#, "invalid UTF-8"),
        ("(a{1000}){1000}", "invalid repetition size: {1000}"),
    ])
    func compileErrorNamesTheReason(pattern: String, reason: String) throws {
        let error = try #require(failureAll("moongate.regex('\(pattern)')"))
        #expect(error.kind == .runtime)
        #expect(error.message.hasPrefix("probe.lua:1: moongate.regex: cannot compile '"))
        #expect(error.message.hasSuffix("': \(reason)"))
    }

    @Test("a program over 5,000 instructions is refused with its size")
    func programSizeLimit() throws {
        let error = try #require(failureAll("moongate.regex('(abcdef){1000}')"))
        #expect(error.kind == .runtime)
        #expect(error.message.contains("cannot compile '(abcdef){1000}'"))
        #expect(error.message.hasSuffix("regex program of 8004 instructions is over the limit of 5000"))
        // 4,004 instructions fit; 5,004 do not
        #expect(try evaluateAll("return { moongate.regex(string.rep('a', 4000)):test(string.rep('a', 4000)) }") == "[true]")
        #expect(failureAll("moongate.regex(string.rep('a', 5000))")?.message.contains("5004 instructions") == true)
    }

    @Test("a pattern over 16 KiB is refused before compiling")
    func patternLengthLimit() {
        let error = failureAll("moongate.regex(string.rep('a', 16385))")
        #expect(error?.kind == .runtime)
        #expect(error?.message.contains("pattern of 16385 bytes is over the limit of 16384") == true)
    }

    @Test("a match whose input times program size is over 16 Mi is refused, naming both")
    func workBound() throws {
        // 4,004 instructions x 4,200 bytes = 16.8 M > 16 Mi; 4,000 bytes fit.
        let source = "local re = moongate.regex(string.rep('a', 4000))\nreturn { re:test(string.rep('a', 4000)) }"
        #expect(try evaluateAll(source) == "[true]")
        let error = try #require(failureAll("local re = moongate.regex(string.rep('a', 4000))\nreturn re:test(string.rep('a', 4200))"))
        #expect(error.kind == .runtime)
        #expect(error.message.hasPrefix("probe.lua:2: moongate.regex: an input of 4200 bytes is too long for this regex of 4004 instructions"))
    }

    @Test("options are checked", arguments: [
        ("moongate.regex('x', { nocase = true })", "unknown option 'nocase'"),
        ("moongate.regex('x', { caseless = 1 })", "option 'caseless' must be a boolean"),
        ("moongate.regex('x', { true })", "unknown option"),
        ("moongate.regex('x', 'i')", "table expected"),
        ("moongate.regex({})", "string expected"),
        ("moongate.regex()", "string expected"),
    ])
    func optionsAreChecked(call: String, message: String) throws {
        let error = try #require(failureAll(call))
        #expect(error.kind == .runtime)
        #expect(error.message.contains(message))
    }

    @Test("a method called on anything but a regex is an error, never a read of foreign memory", arguments: [
        "re.match({}, 'x')",
        "re.find('str', 'x')",
        "re.test(42, 'x')",
        "re.match(true, 'x')",
        "re.match(nil, 'x')",
        "re.match(re.match, 'x')",
        "re.match(moongate.hostset({'a.example'}), 'x')",
        "re.find(moongate.cidrset({'10.0.0.0/8'}), 'x')",
        "re.test(moongate.router({}), 'x')",
        "local m = re.match; m({}, 'x')",
    ])
    func wrongSelfIsAnError(call: String) throws {
        let error = try #require(failureAll("local re = moongate.regex('x') \(call)"))
        #expect(error.kind == .runtime)
        #expect(error.message.contains("moongate.regex expected"))
    }

    @Test("another object's method called with a regex as self is an error", arguments: [
        "moongate.hostset({'a'}).match(re, 'a')",
        "moongate.cidrset({'10.0.0.0/8'}).contains(re, '10.0.0.1')",
        "moongate.router({}).match(re, 'a', '/')",
    ])
    func regexAsForeignSelfIsAnError(call: String) throws {
        let error = try #require(failureAll("local re = moongate.regex('x') \(call)"))
        #expect(error.kind == .runtime)
    }

    @Test("arguments are type-checked", arguments: [
        ("re:match({})", "string expected"),
        ("re:find()", "string expected"),
        ("re:test(nil)", "string expected"),
        ("re:find('x', 'y')", "number expected"),
        ("re:match('x', 1.5)", "number has no integer representation"),
    ])
    func argumentsAreChecked(call: String, message: String) throws {
        let error = try #require(failureAll("local re = moongate.regex('x') return \(call)"))
        #expect(error.kind == .runtime)
        #expect(error.message.contains(message))
    }

    @Test("(a+)+b against 8 KiB of 'a' finishes (RE2 does not backtrack) and finds nothing")
    func nestedQuantifierIsLinear() throws {
        let source = """
            local re, s = moongate.regex('(a+)+b'), string.rep('a', 8192)
            local t = all(re:find(s .. 'b'))
            return { re:match(s) == nil, re:find(s) == nil, re:test(s), t[1], t[2], #t[3] }
            """
        #expect(try evaluateAll(source) == "[true,true,false,1,8193,8192]")
    }

    @Test("compiling, and matching a long input, polls the call's deadline")
    func deadlineIsPolled() throws {
        // With a 1 ns deadline the first poll starts the clock and the next one raises. The probe
        // itself runs fewer instructions than a hook period, so only moongate.regex polls here.
        let matching = try #require(failureAll(
            "local re = moongate.regex('b')\nlocal s = string.rep('a', 20000)\nreturn { re:test(s) }",
            budget: 0, deadline: .nanoseconds(1)))
        #expect(matching.kind == .deadline)
        #expect(matching.message.hasPrefix("probe.lua:3:"))
        let compiling = try #require(failureAll(
            "local a = moongate.regex('a')\nlocal b = moongate.regex('b')", budget: 0, deadline: .nanoseconds(1)))
        #expect(compiling.kind == .deadline)
        #expect(compiling.message.hasPrefix("probe.lua:2:"))
        // A short input against a small program does not poll.
        #expect(try evaluateAll("local re = moongate.regex('b') return { re:test('aaaa'), re:test('ab') }",
                             budget: 0, deadline: .nanoseconds(1)) == "[false,true]")
    }

    @Test("regexes kept in a loop hit the memory cap with a memory error, not unbounded growth")
    func regexesAreChargedToTheCap() throws {
        let error = try #require(failureAll("local t = {}\nfor i = 1, 10000 do t[i] = moongate.regex('x' .. i) end"))
        #expect(error.kind == .memory)
        #expect(error.message.hasPrefix("probe.lua:2:"))
        #expect(error.message.contains("memory cap"))
        // Each regex counts about 258 KiB: a 16 MiB state holds about sixty.
        let json = try evaluateAll("""
            local t = {}
            local ok = pcall(function() for i = 1, 10000 do t[#t + 1] = moongate.regex('x' .. i) end end)
            return { ok, #t > 40 and #t < 64 }
            """)
        #expect(json == "[false,true]")
    }

    @Test("a collected regex gives its charge back")
    func collectedRegexesAreUncharged() throws {
        let lua = try LuaState()
        let env = try lua.newEnvironment()
        lua.collectGarbage()
        let before = lua.heapBytes
        let kept = try #require(try lua.run(
            "local t = {} for i = 1, 10 do t[i] = moongate.regex('a' .. i) end return t", chunkName: "@keep.lua", in: env))
        #expect(lua.heapBytes >= before + 10 * (256 << 10))
        lua.release(kept)
        lua.collectGarbage()
        #expect(lua.heapBytes < before + 64 << 10)
        // Regexes dropped as they are made never reach the cap: the collector runs before refusing.
        let json = try evaluateAll(
            "local n = 0 for i = 1, 200 do if moongate.regex('z' .. i):test('z' .. i) then n = n + 1 end end return { n }")
        #expect(json == "[200]")
    }
}
