import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

@Suite("Composition of plugins")
struct CompositionTests {
    @Test("route: the first non-nil answer wins, in priority order")
    func firstRouteWins() throws {
        let h = try harness([
            ("silent", "return { route = function(req) return nil end }"),
            ("second", "return { route = function(req) return moongate.route('b') end }"),
            ("third", "return { route = function(req) return moongate.route('c') end }"),
        ])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(outcome == PolicyOutcome(decision: .route(cluster: "b"), plugin: "second"))
    }

    @Test("route: no opinion at all is a 404")
    func noRouteIs404() throws {
        let h = try harness([("silent", "return { route = function(req) end }")])
        let outcome = h.decide(try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test")]))
        #expect(outcome.decision.localStatus == 404)
    }

    @Test("connect: any deny wins over an earlier tunnel")
    func anyDenyWins() throws {
        let h = try harness([
            ("allow", "return { connect = function(req) return moongate.tunnel() end }"),
            ("block", "return { connect = function(req) return moongate.deny(403, 'blocked') end }"),
        ])
        let outcome = try h.connect("example.org:443")
        #expect(outcome.decision == .deny(status: 403, reason: "blocked", headers: []))
        #expect(outcome.plugin == "block")
    }

    @Test("connect: the first tunnel wins when nobody denies")
    func firstTunnelWins() throws {
        let h = try harness([
            ("none", "return { connect = function(req) end }"),
            ("via", "return { connect = function(req) return moongate.tunnel_via('parent') end }"),
            ("here", "return { connect = function(req) return moongate.tunnel() end }"),
        ])
        #expect(try h.connect("example.org:443") == PolicyOutcome(decision: .tunnelVia(cluster: "parent"), plugin: "via"))
    }

    @Test("connect: with no plugin enabling it, CONNECT gets a local 403")
    func connectIsOffByDefault() throws {
        let h = try harness([("router", "return { route = function(req) return moongate.route('x') end }")])
        #expect(try h.connect("example.org:443").decision == .deny(status: 403, reason: "CONNECT is not enabled for this target", headers: []))
    }

    @Test("the request view: target is normalised and the Host header plays no part")
    func connectTargetIsNormalised() throws {
        let h = try harness([
            ("echo", """
            return { connect = function(req)
              return moongate.respond(200, req.method .. ' ' .. req.target.host .. ' ' .. req.target.port .. ' ' ..
                req.form .. ' ' .. tostring(req.path) .. ' ' .. req:header('HOST') .. ' ' .. req.client.ip)
            end }
            """)
        ])
        let outcome = try h.connect("[0:0::1]:8443", headers: [HeaderField("Host", "evil.test:443")], client: "203.0.113.5")
        #expect(outcome.decision == .respond(status: 200, body: "CONNECT [::1] 8443 authority nil evil.test:443 203.0.113.5", headers: []))
    }

    @Test("the request view: fields, headers iterator and extended CONNECT's protocol")
    func requestFields() throws {
        let h = try harness([
            ("echo", """
            local function describe(req)
              local seen = {}
              for name, value in req:headers('accept') do seen[#seen + 1] = value end
              return moongate.respond(200, table.concat({ req.method, req.scheme or '-', req.host, tostring(req.port),
                req.path, req.query or '-', req.version, req.protocol or '-', table.concat(seen, '|') }, ' '))
            end
            return { route = describe, connect = describe }
            """)
        ])
        let get = try request("GET http://Example.ORG:8080/a/b?x=1 HTTP/1.1", [HeaderField("Accept", "a"), HeaderField("ACCEPT", "b")])
        #expect(h.decide(get).decision == .respond(status: 200, body: "GET http example.org 8080 /a/b x=1 HTTP/1.1 - a|b", headers: []))
        let ext = try h.extendedConnect(authority: "chat.test:443", path: "/ws", protocolName: "websocket")
        #expect(ext.decision == .respond(status: 200, body: "CONNECT https chat.test 443 /ws - HTTP/2 websocket ", headers: []))
    }

    @Test("a request stashed in a global-free upvalue reads nil outside its call")
    func stashedRequestIsInvalidOutsideCall() throws {
        let h = try harness([
            ("stash", """
            local last
            return { route = function(req)
              local previous = last
              last = req
              return moongate.respond(200, tostring(previous and rawequal(previous, req)))
            end }
            """)
        ])
        _ = h.decide(try request("GET /a HTTP/1.1", [HeaderField("Host", "a.test")]))
        // The view object is long-lived and aliases the current request (documented in moongate.d.lua).
        #expect(h.decide(try request("GET /b HTTP/1.1", [HeaderField("Host", "a.test")])).decision == .respond(status: 200, body: "true", headers: []))
    }

    @Test("scripts can edit headers but never re-add what the floor removes")
    func floorCannotBeUndone() throws {
        let h = try harness([
            ("router", "return { route = function(req) return moongate.route('x') end }"),
            ("edits", """
            return { sanitize_request = function(req, edit)
              edit:set('Connection', 'keep-alive')
              edit:set('Proxy-Authorization', 'Basic eDp5')
              edit:append('Transfer-Encoding', 'chunked')
              edit:set('X-Added', 'yes')
              edit:remove('x-drop')
            end }
            """),
        ])
        let verdict = h.evaluate(
            try request("GET /x HTTP/1.1", [HeaderField("Host", "a.test"), HeaderField("X-Drop", "1"), HeaderField("Connection", "x-added")]))
        let headers = try #require(verdict.upstreamHeaders)
        #expect(headers.first(named: "x-added") == "yes", "a client's Connection header cannot remove what scripts add")
        for name in ["connection", "proxy-authorization", "transfer-encoding", "x-drop"] {
            #expect(headers.first(named: name) == nil, "\(name)")
        }
        #expect(verdict.edits.count == 5)
    }

    @Test("CX-H2-4: an extended CONNECT for bytestream is a tunnel like a classic CONNECT; other protocols still need a route")
    func bytestreamIsAClassicConnect() throws {
        let h = try harness([("allow", "return { connect = function(req) return moongate.tunnel() end }")])
        #expect(try h.extendedConnect(authority: "example.org:443", path: "/", protocolName: "bytestream").decision == .tunnel)
        #expect(try h.extendedConnect(authority: "example.org:443", path: "/", protocolName: "websocket").decision.localStatus == 404)
        let closed = try harness([("none", "return {}")])
        let refused = try closed.extendedConnect(authority: "example.org:443", path: "/", protocolName: "bytestream")
        guard case .deny(403, let reason, _) = refused.decision else {
            Issue.record("expected the default 403, got \(refused.decision)")
            return
        }
        #expect(reason == "CONNECT is not enabled for this target")
    }
}

