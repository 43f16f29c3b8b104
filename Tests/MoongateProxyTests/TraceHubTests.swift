import MoongatePolicy
@testable import MoongateProxy
import NIOCore
import Synchronization
import Testing

/// The live trace hub and its filters, without a socket: what a `/trace` listener is sent.
@Suite("Trace hub and filters")
struct TraceHubTests {
    private func request(_ line: String, host: String = "app.test", client: String = "10.1.2.3") throws -> PolicyRequest {
        try PolicyRequest.parse(line: line, headers: [HeaderField("Host", host)], client: ClientInfo(ip: client, port: 4000))
    }

    @Test("a query parses into a filter; bad values and unknown names are refused")
    func parseQuery() throws {
        let filter = try TraceFilter.parse(query: "client=10.0.0.0%2F8&host=App.Test&path=/api&method=get&decision=deny+403&rate=5&seconds=60")
        #expect(filter.host == "app.test" && filter.pathPrefix == "/api" && filter.method == "GET")
        #expect(filter.decision == "deny 403" && filter.rate == 5 && filter.seconds == 60)
        #expect(filter.client?.contains("10.200.0.1") == true && filter.client?.contains("11.0.0.1") == false)
        let defaults = try TraceFilter.parse(query: "")
        #expect(defaults.rate == 10 && defaults.seconds == 30)
        for bad in ["rate=0", "rate=101", "seconds=301", "client=10.0.0.0/33", "client=example.org", "colour=red"] {
            #expect(throws: TraceFilter.Invalid.self) { try TraceFilter.parse(query: bad) }
        }
    }

    @Test("address blocks: IPv4, IPv6, exact addresses and IPv4-mapped clients")
    func addressBlocks() throws {
        let v4 = try #require(AddressBlock("192.0.2.0/25"))
        #expect(v4.contains("192.0.2.127") && !v4.contains("192.0.2.128"))
        #expect(v4.contains("::ffff:192.0.2.1"))
        let v6 = try #require(AddressBlock("fd00::/8"))
        #expect(v6.contains("fd12::1") && !v6.contains("fe80::1") && !v6.contains("10.0.0.1"))
        let exact = try #require(AddressBlock("::1"))
        #expect(exact.contains("::1") && !exact.contains("::2"))
    }

    @Test("off until someone listens; a matching head gets a trace, the line goes to matching listeners only")
    func listenersAndLines() throws {
        let hub = TraceHub()
        #expect(!hub.isActive)
        var plain = try request("GET /x HTTP/1.1")
        hub.begin(&plain)
        #expect(plain.trace == nil)

        let forApp = Mutex<[String]>([])
        let forDenies = Mutex<[String]>([])
        let a = hub.subscribe(try TraceFilter.parse(query: "host=app.test&client=10.0.0.0/8")) { line in forApp.withLock { $0.append(line) }; return true }
        let d = hub.subscribe(try TraceFilter.parse(query: "decision=deny")) { line in forDenies.withLock { $0.append(line) }; return true }
        #expect(hub.isActive)

        var traced = try request("GET /x HTTP/1.1")
        hub.begin(&traced)
        let trace = try #require(traced.trace)
        hub.finish(
            trace, request: traced, outcome: PolicyOutcome(decision: .route(cluster: "api"), plugin: "host_router"), status: 200,
            reason: nil, local: false, client: traced.client, bytesIn: 0, bytesOut: 10, since: .now())
        #expect(forApp.withLock { $0.count } == 1)
        #expect(forDenies.withLock { $0.isEmpty })
        let line = forApp.withLock { $0[0] }
        #expect(line.contains("\"decision\":\"route api\"") && line.contains("\"cluster\":\"api\"") && line.contains("\"status\":200"))

        hub.unsubscribe(a)
        hub.unsubscribe(d)
        #expect(!hub.isActive)
    }

    @Test("lines over a listener's rate are dropped and counted")
    func rate() throws {
        let hub = TraceHub()
        let sent = Mutex(0)
        let id = hub.subscribe(try TraceFilter.parse(query: "rate=2")) { _ in sent.withLock { $0 += 1 }; return true }
        for _ in 0..<5 {
            var r = try request("GET /x HTTP/1.1")
            hub.begin(&r)
            hub.finish(
                try #require(r.trace), request: r, outcome: PolicyOutcome(decision: .forward, plugin: nil), status: 200, reason: nil,
                local: false, client: r.client, bytesIn: 0, bytesOut: 0, since: .now())
        }
        let totals = try #require(hub.unsubscribe(id))
        #expect(totals.sent == 2 && totals.dropped == 3)
        #expect(sent.withLock { $0 } == 2)
    }

    @Test("per-loop counters from two threads add up at scrape")
    func countersMerge() async throws {
        let metrics = ProxyMetrics()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    for _ in 0..<100 {
                        metrics.request(decision: "forward", status: 200, cluster: nil, refusal: nil, bytesIn: 3, bytesOut: 5, tunnel: false)
                    }
                    metrics.request(decision: "tunnel", status: 403, cluster: nil, refusal: .floor, bytesIn: 0, bytesOut: 41, tunnel: false)
                }
            }
        }
        let text = metrics.exposition()
        #expect(text.contains("moongate_requests_total{decision=\"forward\",status=\"200\",cluster=\"-\"} 200\n"))
        #expect(text.contains("moongate_bytes_relayed_total{direction=\"upstream\",kind=\"forward\"} 600\n"))
        #expect(text.contains("moongate_bytes_relayed_total{direction=\"downstream\",kind=\"forward\"} 1082\n"))
        #expect(text.contains("moongate_refusals_total{reason=\"floor\"} 2\n"))
        #expect(text.contains("moongate_refusals_total{reason=\"malformed\"} 0\n"))
    }
}
