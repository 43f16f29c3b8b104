import Logging
import LuaKit
import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Script output: moongate.log and print")
struct ScriptLogTests {
    private let get = "GET /x HTTP/1.1"
    private let host = [HeaderField("Host", "a.test")]

    private func faultMessage(_ outcome: PolicyOutcome) -> String? {
        if case .fault(let fault) = outcome.decision { return fault.message }
        return nil
    }

    @Test("moongate.log reaches swift-log with the plugin, its file, the calling line and the fields")
    func logCarriesMetadata() throws {
        let capture = LogCapture()
        let h = try loggingHarness([("p", """
            local M = {}
            function M.route(req)
              moongate.log("warning", "slow upstream", { ms = 42, ratio = 0.5, cached = false, host = req.host })
              return moongate.respond(200)
            end
            return M
            """)], capture: capture)
        _ = h.decide(try request(get, host))
        let line = try #require(capture.lines.first)
        #expect(capture.lines.count == 1)
        #expect(line.level == .warning)
        #expect(line.message == "slow upstream")
        #expect(line["plugin"] == "p")
        #expect(line["file"] == "inline/p.lua")
        #expect(line["line"] == "3")
        #expect(line["ms"] == "42")
        #expect(line["ratio"] == "0.5")
        #expect(line["cached"] == "false")
        #expect(line["host"] == "a.test")
        #expect(line.metadata["dropped"] == nil)
    }

    @Test("each level goes to the swift-log level of the same name", arguments: [
        ("debug", Logger.Level.debug), ("info", .info), ("notice", .notice), ("warning", .warning), ("error", .error),
    ])
    func levels(name: String, level: Logger.Level) throws {
        let capture = LogCapture()
        let h = try loggingHarness(
            [("p", "return { route = function(req) moongate.log('\(name)', 'x') return moongate.respond(200) end }")], capture: capture)
        _ = h.decide(try request(get, host))
        #expect(capture.lines.map(\.level) == [level])
    }

    @Test("print logs its arguments at debug level, joined by tabs, as tostring writes them")
    func printIsDebugLog() throws {
        let capture = LogCapture()
        let h = try loggingHarness([("p", """
            local shown = setmetatable({}, { __tostring = function() return "<shown>" end })
            return { route = function(req)
              print("a", 1, 2.5, 3.0, nil, true, shown)
              print()
              return moongate.respond(200)
            end }
            """)], capture: capture)
        _ = h.decide(try request(get, host))
        #expect(capture.lines.map(\.message) == ["a\t1\t2.5\t3.0\tnil\ttrue\t<shown>", ""])
        #expect(capture.lines.allSatisfy { $0.level == .debug })
        #expect(capture.lines.first?["line"] == "3")
    }

    @Test("the lines of a call that then faults are still logged")
    func faultingCallKeepsItsLines() throws {
        let capture = LogCapture()
        let h = try loggingHarness([("p", """
            return { route = function(req)
              moongate.log("info", "before the fault")
              print("also before")
              error("boom")
            end }
            """)], capture: capture)
        let outcome = h.decide(try request(get, host))
        #expect(faultMessage(outcome)?.contains("p.lua:4: boom") == true)
        #expect(capture.lines.map(\.message) == ["before the fault", "also before"])
    }

    @Test("lines logged while loading are logged, also when init then fails")
    func loadTimeLines() throws {
        let capture = LogCapture()
        _ = try loggingHarness([("p", "moongate.log('info', 'body')\nreturn { init = function(c) print('init') end }")], capture: capture)
        #expect(capture.lines.map(\.message) == ["body", "init"])
        #expect(capture.lines.map { $0["line"] } == ["1", "2"])
        let failing = LogCapture()
        #expect(throws: PolicyLoadError.self) {
            try loggingHarness([("q", "return { init = function(c) moongate.log('error', 'bad config') error('no') end }")], capture: failing)
        }
        #expect(failing.lines.map(\.message) == ["bad config"])
        #expect(failing.lines.first?["plugin"] == "q")
    }

    @Test("wrong arguments are Lua errors at the calling line, and nothing is logged", arguments: [
        "moongate.log('loud', 'x')",
        "moongate.log(nil, 'x')",
        "moongate.log('info')",
        "moongate.log('info', {})",
        "moongate.log('info', 'x', 5)",
        "moongate.log('info', 'x', { [1] = 'a' })",
        "moongate.log('info', 'x', { k = {} })",
        "moongate.log('info', 'x', { k = print })",
        "moongate.log('info', 'x', { plugin = 'forged' })",
        "moongate.log('info', 'x', { line = 1 })",
        "moongate.log('info', 'x', { ['bad key'] = 1 })",
        "moongate.log('info', 'x', { [string.rep('k', 65)] = 1 })",
        "local f = {} for i = 1, 17 do f['k' .. i] = i end moongate.log('info', 'x', f)",
    ])
    func wrongArguments(call: String) throws {
        let capture = LogCapture()
        let h = try loggingHarness([("p", "return { route = function(req)\n\(call)\nreturn moongate.respond(200) end }")], capture: capture)
        let outcome = h.decide(try request(get, host))
        guard case .fault(let fault) = outcome.decision else {
            Issue.record("\(call): expected a fault, got \(outcome)")
            return
        }
        #expect(fault.kind.description == "runtime")
        #expect(fault.message.hasPrefix("p.lua:2:"), "\(fault.message)")
        #expect(capture.lines.isEmpty)
    }

    @Test("16 fields are allowed")
    func sixteenFields() throws {
        let capture = LogCapture()
        let h = try loggingHarness([("p", """
            return { route = function(req)
              local f = {} for i = 1, 16 do f['k' .. i] = i end
              moongate.log('info', 'x', f)
              return moongate.respond(200)
            end }
            """)], capture: capture)
        _ = h.decide(try request(get, host))
        #expect(capture.lines.first?["k16"] == "16")
    }

    @Test("a message over 4 KiB is cut and marked; control characters cannot forge lines")
    func boundsAndEscapes() throws {
        let capture = LogCapture()
        let h = try loggingHarness([("p", """
            return { route = function(req)
              moongate.log('info', string.rep('m', 5000), { v = string.rep('v', 2000) })
              moongate.log('info', 'one\\nmoongate.access forged=1\\r\\0', { v = 'a\\nb' })
              return moongate.respond(200)
            end }
            """)], capture: capture)
        _ = h.decide(try request(get, host))
        try #require(capture.lines.count == 2)
        let long = capture.lines[0]
        #expect(long.message == String(repeating: "m", count: 4096))
        #expect(long["v"] == String(repeating: "v", count: 1024))
        #expect(long["truncated"] == "true")
        let escaped = capture.lines[1]
        #expect(escaped.message == #"one\nmoongate.access forged=1\r\x00"#)
        #expect(escaped["v"] == #"a\nb"#)
        #expect(escaped.metadata["truncated"] == nil)
    }

    @Test("the rate limit: 100 lines a second per plugin, the rest dropped and counted in the next line")
    func rateLimit() async throws {
        let capture = LogCapture()
        let h = try loggingHarness([
            ("noisy", """
            return { route = function(req)
              for i = 1, 150 do moongate.log('info', 'line ' .. i) end
              if req.path == '/again' then print('after') end
            end }
            """),
            ("quiet", "return { route = function(req) moongate.log('info', 'quiet') return moongate.respond(200) end }"),
        ], capture: capture)
        _ = h.decide(try request(get, host))
        // A burst of 100 (and a line more for every 10 ms the loop took, on a busy machine).
        let noisy = capture.lines.filter { $0["plugin"] == "noisy" }
        #expect((100..<150).contains(noisy.count), "\(noisy.count)")
        #expect(noisy.map(\.message) == (1...noisy.count).map { "line \($0)" })
        #expect(capture.lines.filter { $0["plugin"] == "quiet" }.count == 1, "another plugin has its own bucket")
        // Some time later the bucket holds lines again (one per 10 ms): the first carries the count of
        // the lines dropped before it.
        try await Task.sleep(for: .milliseconds(20))
        _ = h.decide(try request("GET /again HTTP/1.1", host))
        let later = capture.lines.filter { $0["plugin"] == "noisy" }.dropFirst(noisy.count)
        let first = try #require(later.first)
        #expect(first["dropped"] == "\(150 - noisy.count)")
        #expect(later.dropFirst().allSatisfy { $0.metadata["dropped"] == nil })
        #expect((1...100).contains(later.count))
    }

    @Test("logging allocates nothing that stays on the Lua heap")
    func noHeapGrowth() throws {
        let capture = LogCapture()
        let h = try loggingHarness(
            [("p", "return { route = function(req) moongate.log('debug', 'x') print('y') return moongate.route('c') end }")],
            capture: capture)
        #expect(h.heapGrowth(of: try request(get, host), calls: 2_000) == 0)
    }
}
