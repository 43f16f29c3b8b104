import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Decision traces")
struct TraceTests {
    private func traced(_ line: String, _ headers: [HeaderField] = []) throws -> PolicyRequest {
        var r = try request(line, headers)
        r.trace = PolicyTrace()
        return r
    }

    @Test("route: every hook called is listed in order, with its answer, and the first answer is named as the winner")
    func routeCallsInOrder() throws {
        let h = try harness([
            ("silent", "return { route = function(req) return nil end }"),
            ("second", "return { route = function(req) return moongate.route('b') end }"),
            ("third", "return { route = function(req) return moongate.route('c') end }"),
        ])
        let r = try traced("GET /x HTTP/1.1", [HeaderField("Host", "a.test")])
        let verdict = h.evaluate(r)
        #expect(verdict.outcome == PolicyOutcome(decision: .route(cluster: "b"), plugin: "second"))
        let record = try #require(r.trace).record
        #expect(record.calls.map { "\($0.plugin).\($0.hook)=\($0.answer)" } == ["silent.route=nil", "second.route=route b"])
        #expect(record.composition == ["route: the first answer wins: route b from plugin second; later hooks not called"])
    }

    @Test("connect: a deny after a tunnel is the chosen step, and the default deny is named when nobody enables CONNECT")
    func connectSteps() throws {
        let h = try harness([
            ("allow", "return { connect = function(req) return moongate.tunnel() end }"),
            ("block", "return { connect = function(req) if req.port == 25 then return moongate.deny(403, 'no mail') end end }"),
        ])
        let denied = try traced("CONNECT mail.test:25")
        #expect(h.evaluate(denied).outcome.plugin == "block")
        let record = try #require(denied.trace).record
        #expect(record.calls.map(\.answer) == ["tunnel", "deny 403"])
        #expect(record.composition.first?.hasPrefix("connect: deny from plugin block wins over any tunnel") == true)

        let allowed = try traced("CONNECT web.test:443")
        #expect(h.evaluate(allowed).outcome.decision == .tunnel)
        #expect(try #require(allowed.trace).record.composition == ["connect: no deny; the first tunnel wins: tunnel from plugin allow"])

        let off = try harness([("none", "return { connect = function(req) end }")])
        let defaulted = try traced("CONNECT web.test:443")
        #expect(off.evaluate(defaulted).outcome.plugin == nil)
        #expect(try #require(defaulted.trace).record.composition.first?.hasPrefix("connect: no plugin enabled it; default deny 403") == true)
    }

    @Test("sanitize_request: each plugin's own edits, and what the sanitization floor removed")
    func sanitizeEditsAndFloor() throws {
        let h = try harness([
            ("router", "return { route = function(req) return moongate.forward() end }"),
            ("a", "return { sanitize_request = function(req, edit) edit:set('x-a', '1') end }"),
            ("b", "return { sanitize_request = function(req, edit) edit:remove('x-drop'); edit:set('x-b', '2') end }"),
        ])
        let r = try traced(
            "GET http://a.test/ HTTP/1.1",
            [HeaderField("Connection", "x-secret"), HeaderField("X-Secret", "1"), HeaderField("X-Drop", "1")])
        let verdict = h.evaluate(r)
        let record = try #require(r.trace).record
        #expect(record.calls.map { "\($0.plugin).\($0.hook)" } == ["router.route", "a.sanitize_request", "b.sanitize_request"])
        #expect(record.calls[1].edits == [HeaderEdit(.set, "x-a", "1")])
        #expect(record.calls[2].edits == [HeaderEdit(.remove, "x-drop"), HeaderEdit(.set, "x-b", "2")])
        #expect(record.edits == verdict.edits)
        #expect(record.floorRemoved == ["connection", "x-secret"])
        #expect(verdict.upstreamHeaders?.contains { $0.hasName("x-secret") } == false)
    }

    @Test("a faulting hook is listed with its fault, and the step says the request fails closed")
    func faultIsTraced() throws {
        let h = try harness([
            ("broken", "return { route = function(req) error('boom') end }"),
            ("later", "return { route = function(req) return moongate.route('b') end }"),
        ])
        let r = try traced("GET /x HTTP/1.1", [HeaderField("Host", "a.test")])
        #expect(h.evaluate(r).outcome.decision.localStatus == 500)
        let record = try #require(r.trace).record
        #expect(record.calls.count == 1)
        #expect(record.calls[0].answer.hasPrefix("fault runtime: "))
        #expect(record.calls[0].answer.contains("broken.lua:1: boom"))
        #expect(record.composition == ["route: fault in plugin broken fails the request closed: 500"])
    }

    @Test("an invalid verb from a hook is a fault step")
    func invalidVerbIsAStep() throws {
        let h = try harness([("wrong", "return { connect = function(req) return moongate.forward() end }")])
        let r = try traced("CONNECT web.test:443")
        #expect(h.evaluate(r).outcome.decision.verb == "fault")
        #expect(try #require(r.trace).record.composition.last == "connect: invalid return from plugin wrong is a fault: 500")
    }

    @Test("an untraced request records nothing, and the same instance traces the next one")
    func untracedRecordsNothing() throws {
        let h = try harness([("router", "return { route = function(req) return moongate.route('b') end }")])
        let plain = try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")])
        _ = h.evaluate(plain)
        #expect(plain.trace == nil)
        let r = try traced("GET /y HTTP/1.1", [HeaderField("Host", "a.test")])
        _ = h.evaluate(r)
        #expect(try #require(r.trace).record.calls.count == 1)
    }

    @Test("hook latencies are recorded per plugin and hook only when the stats carry a histogram set")
    func latencies() throws {
        let latencies = HookLatencies()
        let spec = PolicySpec(
            plugins: [PluginSource(name: "r", path: "inline/r.lua", source: "return { route = function(req) return moongate.route('b') end }", priority: 0, config: .table([]))],
            memoryCap: 16 << 20, instructionBudget: 1_000_000)
        let instance = try PolicyInstance(spec: spec, stats: PolicyStats(hookLatencies: latencies))
        let r = try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")])
        for _ in 0..<5 { _ = instance.evaluate(r) }
        let summary = try #require(latencies.summaries().first)
        #expect(summary.plugin == "r" && summary.hook == "route")
        #expect(summary.count == 5)
        #expect(summary.cumulative.last == 5)
        #expect(zip(summary.cumulative, summary.cumulative.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(summary.sumNanoseconds > 0)
    }

    @Test("the text form lists calls with times, then the steps and notes")
    func textLines() throws {
        let h = try harness([("router", "return { route = function(req) return moongate.route('b') end }")])
        let r = try traced("GET /x HTTP/1.1", [HeaderField("Host", "a.test")])
        _ = h.evaluate(r)
        let trace = try #require(r.trace)
        trace.note("floor", "not applied")
        let lines = trace.record.lines
        #expect(lines[0].hasPrefix("  1. router.route -> route b  ("))
        #expect(lines[0].hasSuffix(" µs)"))
        #expect(lines.contains("  floor: not applied"))
    }
}
