import MoongateConfig
import MoongatePolicy
import MoongateTesting
import Testing

/// `moongate.tunnel{ tls = ... }` and `tunnel_via(cluster, { tls = ... })`: what the proxy is asked
/// to do toward the target, and the options refused as faults.
@Suite("Tunnel options")
struct TunnelOptionsTests {
    private func outcome(_ body: String) throws -> PolicyOutcome {
        let source = "local M = {}\nfunction M.connect(req) \(body) end\nreturn M\n"
        let harness = try ScriptHarness(
            spec: PolicySpec(plugins: [PluginSource(name: "p", path: "plugins/p.lua", source: source)], clusters: ["parent"]))
        return try harness.connect("a.test:443")
    }

    @Test("tls options reach the outcome, with their defaults", arguments: [
        ("return moongate.tunnel()", nil),
        ("return moongate.tunnel{ tls = false }", nil),
        ("return moongate.tunnel{ tls = true }", TunnelTLSRequest(serverName: nil, verify: true)),
        ("return moongate.tunnel{ tls = { sni = \"API.test\" } }", TunnelTLSRequest(serverName: "api.test", verify: true)),
        ("return moongate.tunnel{ tls = { verify = false } }", TunnelTLSRequest(serverName: nil, verify: false)),
        ("return moongate.tunnel_via(\"parent\", { tls = { sni = \"b.test\" } })", TunnelTLSRequest(serverName: "b.test", verify: true)),
    ])
    func options(body: String, expected: TunnelTLSRequest?) throws {
        let found = try outcome(body)
        #expect(found.decision == .tunnel || found.decision == .tunnelVia(cluster: "parent"), "\(found)")
        #expect(found.tunnelTLS == expected)
    }

    @Test("bad options are faults naming what is wrong", arguments: [
        ("return moongate.tunnel(5)", "tunnel options must be a table"),
        ("return moongate.tunnel{ tsl = true }", "tunnel options take only tls"),
        ("return moongate.tunnel{ tls = { sni = 5 } }", "tls.sni must be a string"),
        ("return moongate.tunnel{ tls = { verify = \"no\" } }", "tls.verify must be true or false"),
        ("return moongate.tunnel{ tls = { port = 1 } }", "tls takes only sni and verify"),
    ])
    func badOptions(body: String, message: String) throws {
        guard case .fault(let fault) = try outcome(body).decision else {
            Issue.record("not a fault")
            return
        }
        #expect(fault.message.contains(message), "\(fault.message)")
    }
}
