import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

/// The native matchers scripts build in `init` (hostset, cidrset, router) and the helpers.
@Suite("Native matchers")
struct MatcherTests {
    /// A plugin whose route hook answers `respond 200 <expression>` for the expression under test.
    private func evaluate(_ setup: String, _ expression: String, path: String = "/") throws -> String? {
        let h = try harness([("m", """
            local M = {}
            \(setup)
            function M.route(req) return moongate.respond(200, tostring(\(expression))) end
            return M
            """)])
        let outcome = h.decide(try request("GET \(path) HTTP/1.1", [HeaderField("Host", "a.test")]))
        if case .respond(_, let body, _) = outcome.decision { return body }
        Issue.record("unexpected \(outcome)")
        return nil
    }

    @Test("hostset: exact, wildcard (not the apex), any host, ports", arguments: [
        ("s:match('example.org', 443)", "true"),
        ("s:match('EXAMPLE.org.', 443)", "true"),
        ("s:match('example.org', 8443)", "true"),
        ("s:match('api.example.com', 443)", "true"),
        ("s:match('example.com', 443)", "false"),
        ("s:match('db.internal', 5432)", "true"),
        ("s:match('db.internal', 5433)", "false"),
        ("s:match('[::1]', 8080)", "true"),
        ("s:match('other.test', 443)", "false"),
    ])
    func hostset(expression: String, expected: String) throws {
        let setup = "local s = moongate.hostset({ 'example.org', '*.example.com:443', 'db.internal:5432', '[::1]:*' })"
        #expect(try evaluate(setup, expression) == expected)
    }

    @Test("cidrset: IPv4 and IPv6 blocks, IPv4-mapped addresses", arguments: [
        ("c:contains('10.1.2.3')", "true"),
        ("c:contains('11.1.2.3')", "false"),
        ("c:contains('192.168.7.9')", "true"),
        ("c:contains('::ffff:10.0.0.1')", "true"),
        ("c:contains('2001:db8::42')", "true"),
        ("c:contains('2001:db9::1')", "false"),
        ("c:contains('203.0.113.7')", "true"),
        ("c:contains('not an ip')", "false"),
        // An IPv4 block written as IPv4-mapped IPv6 takes a 128-bit prefix (found by the API fuzzer:
        // '/120' was refused as over 32).
        ("c:contains('192.0.2.77')", "true"),
        ("c:contains('::ffff:192.0.2.1')", "true"),
        ("c:contains('192.0.3.1')", "false"),
    ])
    func cidrset(expression: String, expected: String) throws {
        let setup =
            "local c = moongate.cidrset({ '10.0.0.0/8', '192.168.0.0/16', '2001:db8::/32', '203.0.113.7', '::ffff:192.0.2.0/120' })"
        #expect(try evaluate(setup, expression) == expected)
    }

    @Test("router: most specific host, then longest prefix; the route table itself comes back", arguments: [
        ("(r:match('api.example.com', '/v1/x') or {}).cluster", "api"),
        ("(r:match('api.example.com', '/v1/admin/x') or {}).cluster", "admin"),
        ("(r:match('shop.example.com', '/v1/x') or {}).cluster", "shops"),
        ("(r:match('other.test', '/x') or {}).cluster", "fallback"),
        ("(r:match('API.example.com:8080', '/v1/') or {}).cluster", "api"),
    ])
    func router(expression: String, expected: String) throws {
        let setup = """
            local r = moongate.router({
              { host = '*', prefix = '/', cluster = 'fallback' },
              { host = '*.example.com', cluster = 'shops' },
              { host = 'api.example.com', prefix = '/v1/', cluster = 'api' },
              { host = 'api.example.com', prefix = '/v1/admin/', cluster = 'admin' },
            })
            """
        #expect(try evaluate(setup, expression) == expected)
    }

    @Test("ip_class, base64 and the pattern-free helpers", arguments: [
        ("moongate.ip_class('169.254.169.254')", "metadata"),
        ("moongate.ip_class('fd00:ec2::254')", "metadata"),
        ("moongate.ip_class('100.64.0.1')", "cgnat"),
        ("moongate.ip_class('[fe80::1]')", "linklocal"),
        ("moongate.ip_class('8.8.8.8')", "public"),
        ("moongate.ip_class('example.org')", "nil"),
        ("moongate.base64_decode(moongate.base64_encode('alice:wonder'))", "alice:wonder"),
        ("moongate.base64_decode('%%%')", "nil"),
        ("moongate.starts_with('/api/v1', '/api')", "true"),
        ("moongate.ends_with('a.example.com', '.example.com')", "true"),
    ])
    func helpers(expression: String, expected: String) throws {
        #expect(try evaluate("", expression) == expected)
    }

    @Test("a matcher built with a bad entry is rejected at load with a clear message")
    func badEntryIsRejected() {
        let spec = PolicySpec(plugins: [PluginSource(name: "p", path: "p.lua", source: """
            local s
            return { init = function(c) s = moongate.cidrset({ '10.0.0.0/33' }) end }
            """)])
        let error = ScriptHarness.rejection(of: spec)
        #expect(error?.message.contains("invalid prefix in '10.0.0.0/33'") == true)
    }
}

@Suite("SHA-256")
struct SHA256Tests {
    @Test("known digests", arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func digest(input: String, expected: String) {
        #expect(SHA256.hex(Array(input.utf8)) == expected)
    }
}
