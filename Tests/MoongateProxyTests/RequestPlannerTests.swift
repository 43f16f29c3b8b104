@testable import MoongateConfig
import MoongatePolicy
@testable import MoongateProxy
import Testing

/// The protocol-neutral decision table: a request and policy's real verdict (inline plugins) in, the
/// action a codec carries out. No channel, no socket.
@Suite("Request planner")
struct RequestPlannerTests {
    private let api = ClusterTarget(ClusterConfig(name: "api", endpoints: [], connectTimeout: .seconds(1), poolSize: 4))

    private func plan(
        _ line: String, headers: [HeaderField] = [HeaderField("Host", "a.test")], plugin: String, keepAlive: Bool = true,
        refusal: String? = nil
    ) throws -> RequestAction {
        let instance = try PolicyInstance(spec: PolicySpec(plugins: [PluginSource(name: "p", path: "p.lua", source: plugin)]))
        let request = try PolicyRequest.parse(line: line, headers: headers, client: ClientInfo(ip: "192.0.2.1", port: 1))
        return RequestPlanner.plan(
            request, instance.evaluate(request), keepAlive: keepAlive, tunnelRefusal: { refusal },
            cluster: { $0 == "api" ? api : nil })
    }

    private func answer(_ action: RequestAction) -> LocalAnswer? {
        if case .answer(let answer) = action { return answer }
        return nil
    }

    @Test("deny and respond are local answers; respond keeps its body exactly, with its headers")
    func denyAndRespond() throws {
        let deny = try #require(answer(try plan("GET /x HTTP/1.1", plugin: "return { route = function() return moongate.deny(451, 'gone') end }")))
        #expect(deny == LocalAnswer(status: 451, body: "gone", keepAlive: true))
        let respond = try #require(answer(try plan(
            "GET /x HTTP/1.1", plugin: "return { route = function() return moongate.respond(200, 'hi', { ['x-a'] = '1' }) end }",
            keepAlive: false)))
        #expect(respond == LocalAnswer(status: 200, body: "hi", headers: [HeaderField("x-a", "1")], exact: true, keepAlive: false))
    }

    @Test("a fault is a 500, never a forward")
    func faultIsA500() throws {
        let fault = try #require(answer(try plan("GET /x HTTP/1.1", plugin: "return { route = function() error('x') end }")))
        #expect(fault.status == 500)
    }

    @Test("a route to a known cluster is an exchange with the sanitised headers; an upgrade keeps its kind")
    func routeIsAnExchange() throws {
        let action = try plan("GET /x HTTP/1.1", plugin: "return { route = function() return moongate.route('api') end }")
        guard case .exchange(let kind, .cluster(let target), let headers, let keepAlive) = action else {
            Issue.record("expected an exchange to a cluster, got \(action)")
            return
        }
        #expect(kind == .forward && target === api && keepAlive)
        #expect(headers.contains { $0.hasName("host") })
        let upgrade = try plan(
            "GET /ws HTTP/1.1", headers: [HeaderField("Host", "a.test"), HeaderField("Connection", "upgrade"), HeaderField("Upgrade", "websocket")],
            plugin: "return { connect = function() return moongate.tunnel() end, route = function() return moongate.route('api') end }")
        guard case .exchange(.upgrade, .cluster, _, _) = upgrade else {
            Issue.record("expected an upgrade exchange, got \(upgrade)")
            return
        }
    }

    @Test("a route to an unknown cluster is a 503 with the problem named for the error log")
    func unknownCluster() throws {
        let answer = try #require(answer(try plan("GET /x HTTP/1.1", plugin: "return { route = function() return moongate.route('nope') end }")))
        #expect(answer.status == 503)
        #expect(answer.problem == "policy routed to an unknown cluster 'nope'")
    }

    @Test("forward goes to the request's own authority; without one it is a 400")
    func forwardUsesTheAuthority() throws {
        let plugin = "return { route = function() return moongate.forward() end }"
        let action = try plan("GET http://example.org:8080/x HTTP/1.1", headers: [HeaderField("Host", "example.org:8080")], plugin: plugin)
        guard case .exchange(.forward, .authority(let authority), _, _) = action else {
            Issue.record("expected an exchange to an authority, got \(action)")
            return
        }
        #expect(authority.description == "example.org:8080")
        let nowhere = try #require(answer(try plan("GET /x HTTP/1.0", headers: [], plugin: plugin)))
        #expect(nowhere.status == 400)
    }

    @Test("CONNECT: tunnel terminates here, tunnel_via is an exchange that never keeps the connection, a cap refusal is a final 503")
    func connectActions() throws {
        let headers = [HeaderField("Host", "example.org:443")]
        let terminate = try plan("CONNECT example.org:443 HTTP/1.1", headers: headers, plugin: "return { connect = function() return moongate.tunnel() end }", keepAlive: false)
        guard case .terminateTunnel(let target) = terminate else {
            Issue.record("expected a terminated tunnel, got \(terminate)")
            return
        }
        #expect(target.description == "example.org:443")
        let via = try plan(
            "CONNECT example.org:443 HTTP/1.1", headers: headers, plugin: "return { connect = function() return moongate.tunnel_via('api') end }")
        guard case .exchange(.connectVia, .cluster, _, false) = via else {
            Issue.record("expected a CONNECT exchange via the cluster, got \(via)")
            return
        }
        let capped = try #require(answer(try plan(
            "CONNECT example.org:443 HTTP/1.1", headers: headers, plugin: "return { connect = function() return moongate.tunnel() end }",
            refusal: "too many tunnels")))
        #expect(capped == LocalAnswer(status: 503, body: "too many tunnels", keepAlive: false, endsConnection: true))
        // A refused CONNECT never consults the caps.
        let denied = try #require(answer(try plan("CONNECT example.org:443 HTTP/1.1", headers: headers, plugin: "return {}", refusal: "caps")))
        #expect(denied.status == 403)
    }
}
