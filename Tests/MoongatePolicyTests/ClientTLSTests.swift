import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

/// `req.client.tls`: false for a cleartext client, else a read-only view of the session (version,
/// ALPN, SNI, cipher, and a verified client certificate's subject, SANs and fingerprint).
@Suite("The client's TLS session as a script reads it")
struct ClientTLSTests {
    static let router = """
        local M = {}
        function M.route(req)
          local tls = req.client.tls
          if not tls then return moongate.deny(426, "use https") end
          if tls.subject and tls.subject:find("CN=mallory", 1, true) then return moongate.deny(403, "revoked") end
          local sans = tls.sans
          if sans and sans[2] == "ops.test" then return moongate.route("ops") end
          if tls.sni == "api.test" and tls.alpn == "h2" then return moongate.route("api") end
          return moongate.respond(200, (tls.version or "?") .. " " .. (tls.cipher or "-") .. " " .. (tls.sha256 or "-"))
        end
        M.tests = {
          { request = "GET https://x.test/", expect = "deny 426" },
          { request = "GET https://x.test/", tls = true, expect = "respond 200" },
          { request = "GET https://api.test/", tls = { sni = "API.test", alpn = "h2" }, expect = "route api" },
          { request = "GET https://api.test/", tls = { sni = "api.test", alpn = "http/1.1" }, expect = "respond 200" },
          { request = "GET https://x.test/", tls = { subject = "CN=mallory,O=Example" }, expect = "deny 403" },
          { request = "GET https://x.test/", tls = { sans = { "alice.test", "ops.test" } }, expect = "route ops" },
        }
        return M
        """

    private func harness() throws -> ScriptHarness {
        try ScriptHarness(spec: PolicySpec(plugins: [PluginSource(name: "p", path: "plugins/p.lua", source: Self.router)]))
    }

    @Test("test cases state the session as a table, and the script routes and refuses by it")
    func testCasesCarryTheSession() throws {
        let results = try harness().runPluginTests()
        #expect(results.count == 6)
        for result in results { #expect(result.passed, "\(result)") }
    }

    @Test("every field reaches the script")
    func everyFieldReachesTheScript() throws {
        let session = TLSSessionInfo(
            version: "TLSv1.2", alpn: "http/1.1", sni: "x.test", cipher: "ECDHE-RSA-AES128-GCM-SHA256",
            clientCertificate: ClientCertificateInfo(subject: "CN=alice", sans: ["alice.test"], sha256: "ab12"))
        let request = try PolicyRequest.parse(
            line: "GET https://x.test/", headers: [], client: ClientInfo(ip: "192.0.2.1", session: session))
        let outcome = try harness().decide(request)
        #expect(outcome.decision.summary == "respond 200")
        guard case .respond(_, let body, _) = outcome.decision else { Issue.record("not a respond"); return }
        #expect(body == "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 ab12")
    }

    @Test("a bad tls value in a test case names the key")
    func badTLSValue() throws {
        let source = """
            local M = {}
            function M.route(req) return moongate.route("a") end
            M.tests = { { request = "GET https://x.test/", tls = { snii = "x" }, expect = "route a" },
                        { request = "GET https://x.test/", tls = { sans = "x" }, expect = "route a" } }
            return M
            """
        let results = try ScriptHarness(spec: PolicySpec(plugins: [PluginSource(name: "p", path: "plugins/p.lua", source: source)]))
            .runPluginTests()
        #expect(results[0].failure?.contains("tls: unknown key 'snii'") == true, "\(results[0])")
        #expect(results[1].failure?.contains("'sans' must be a list of strings") == true, "\(results[1])")
    }

    @Test("the decide command's --tls text is read with commas inside a subject")
    func decideSpec() throws {
        let session = try TLSSessionInfo(spec: "sni=A.test,alpn=h2,subject=CN=alice,O=Example,sans=a.test|b.test,sha256=ff")
        #expect(session.sni == "a.test")
        #expect(session.alpn == "h2")
        #expect(session.clientCertificate?.subject == "CN=alice,O=Example")
        #expect(session.clientCertificate?.sans == ["a.test", "b.test"])
        #expect(session.clientCertificate?.sha256 == "ff")
        #expect(throws: CaseError.self) { try TLSSessionInfo(spec: "bogus") }
    }
}
