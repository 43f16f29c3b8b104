import MoongateConfig
import Testing

/// A listener's `tls:` block: paths resolved against the config's folder, defaults, and errors
/// that name the file, line and key.
@Suite("TLS listener configuration")
struct TLSConfigTests {
    private func error(_ yaml: String) -> String? {
        do {
            _ = try ConfigLoader.parse(yaml, path: "/etc/moongate/test.yaml")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("pairs, names, the default pair and the modern defaults")
    func parsesPairs() throws {
        let config = try ConfigLoader.parse(
            """
            listeners:
              - name: web
                port: 8443
                protocols: [http1, http2]
                tls:
                  certificates:
                    - { cert: certs/a.pem, key: certs/a.key }
                    - { cert: /abs/b.pem, key: /abs/b.key, names: [B.test, "*.b.test"], default: true }
            timeouts: { tls_handshake: 3s }
            """, path: "/etc/moongate/c.yaml")
        let tls = try #require(config.listeners[0].tls)
        #expect(tls.certificates[0].certificateFile == "/etc/moongate/certs/a.pem")
        #expect(tls.certificates[0].keyFile == "/etc/moongate/certs/a.key")
        #expect(tls.certificates[0].serverNames.isEmpty)
        #expect(tls.certificates[1].serverNames == ["b.test", "*.b.test"])
        #expect(tls.defaultIndex == 1)
        #expect(tls.minVersion == .tls12)
        #expect(tls.ciphers == ListenerTLSConfig.modernCiphers)
        #expect(tls.clientCertificate == .none)
        #expect(config.timeouts.tlsHandshake == .seconds(3))
        #expect(try ConfigLoader.parse("listeners: [{ port: 1 }]\n", path: "/x.yaml").timeouts.tlsHandshake == .seconds(10))
    }

    @Test("bad values are errors naming the line and key", arguments: [
        ("tls: { certificates: [] }", "at least one certificate"),
        ("tls: { certificates: [{ cert: a.pem }] }", "needs key"),
        ("tls: { certificates: [{ cert: a.pem, key: a.key, names: [\"a..b\"] }] }", "not a host name"),
        ("tls: { certificates: [{ cert: a.pem, key: a.key }], min_version: \"1.1\" }", "min_version must be 1.2 or 1.3"),
        ("tls: { certificates: [{ cert: a.pem, key: a.key }], client_cert: require }", "needs client_ca"),
        ("tls: { certificates: [{ cert: a.pem, key: a.key }], client_cert: maybe, client_ca: ca.pem }", "none, request or require"),
        ("tls: { certificates: [{ cert: a.pem, key: a.key }], sni: x }", "unknown key 'sni'"),
        ("tls: { certificates: [{ cert: a.pem, key: a.key, default: true }, { cert: b.pem, key: b.key, default: true }] }", "only one"),
    ])
    func badValues(tls: String, message: String) {
        let found = error("listeners:\n  - port: 8443\n    \(tls)\n")
        #expect(found?.hasPrefix("/etc/moongate/test.yaml:") == true, "\(found ?? "no error")")
        #expect(found?.contains(message) == true, "\(found ?? "no error")")
    }

    @Test("a cluster's tls and via")
    func clusterTLSAndVia() throws {
        let config = try ConfigLoader.parse(
            """
            clusters:
              - { name: parent, endpoints: ["127.0.0.1:3128"] }
              - name: origin
                endpoints: ["origin.test:443"]
                via: parent
                tls: { sni: Origin.TEST, ca_file: ca.pem, cert: c.pem, key: c.key, insecure_skip_verify: true }
              - { name: plain, endpoints: ["127.0.0.1:1"], tls: true }
            """, path: "/etc/moongate/c.yaml")
        let origin = try #require(config.cluster(named: "origin"))
        #expect(origin.via == "parent")
        #expect(origin.tls?.serverName == "origin.test")
        #expect(origin.tls?.caFile == "/etc/moongate/ca.pem")
        #expect(origin.tls?.certificateFile == "/etc/moongate/c.pem")
        #expect(origin.tls?.insecureSkipVerify == true)
        #expect(origin.tls?.alpn == nil && origin.tls?.offeredALPN(for: .http1) == ["http/1.1"])
        #expect(origin.tls?.offeredALPN(for: .http2) == ["h2"])
        #expect(origin.tls?.offeredALPN(for: .auto) == ["h2", "http/1.1"])
        #expect(config.cluster(named: "plain")?.tls?.caFile == nil)
        #expect(config.cluster(named: "parent")?.tls == nil)
    }

    @Test("bad cluster tls and via are errors", arguments: [
        ("- { name: a, endpoints: [\"h:1\"], tls: { alpn: [h2] } }", "its alpn must offer http/1.1 (protocol: http2 or auto for h2)"),
        ("- { name: a, endpoints: [\"h:1\"], protocol: auto }", "needs tls"),
        ("- { name: a, endpoints: [\"h:1\"], protocol: http2, tls: { alpn: [http/1.1] } }", "its alpn must offer h2"),
        ("- { name: a, endpoints: [\"h:1\"], tls: { alpn: [spdy/3] } }", "alpn offers h2 and http/1.1 only, not 'spdy/3'"),
        ("- { name: a, endpoints: [\"h:1\"], tls: { cert: c.pem } }", "both cert and key"),
        ("- { name: a, endpoints: [\"h:1\"], via: nowhere }", "via names no configured cluster"),
        ("- { name: a, endpoints: [\"h:1\"], via: a }", "through itself"),
        ("- { name: a, endpoints: [\"h:1\"], tls: true }\n  - { name: b, endpoints: [\"h:1\"], via: a }", "cleartext proxy"),
    ])
    func badClusters(cluster: String, message: String) {
        let found = error("clusters:\n  \(cluster)\n")
        #expect(found?.hasPrefix("/etc/moongate/test.yaml:") == true, "\(found ?? "no error")")
        #expect(found?.contains(message) == true, "\(found ?? "no error")")
    }
}
