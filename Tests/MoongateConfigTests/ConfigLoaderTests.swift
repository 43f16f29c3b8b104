import MoongateConfig
import Testing

/// What an operator sees when a configuration is read: the edge defaults, and errors that name
/// the file, the line and the key path.
@Suite("Configuration loading")
struct ConfigLoaderTests {
    private func error(_ yaml: String) -> String? {
        do {
            _ = try ConfigLoader.parse(yaml, path: "/etc/moongate/test.yaml")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("the edge defaults apply when limits and timeouts are not given")
    func edgeDefaults() throws {
        let config = try ConfigLoader.parse("listeners: [{ name: a, address: 127.0.0.1, port: 3128 }]\n", path: "/x/c.yaml")
        #expect(config.limits.maxHeaderBytes == 60 * 1024)
        #expect(config.limits.maxHeaderCount == 100)
        #expect(config.limits.maxRequestLineBytes == 8 * 1024)
        #expect(config.limits.maxHeaderFieldBytes == 8 * 1024)
        #expect(config.limits.maxTunnels == 5_000)
        #expect(config.limits.maxTunnelsPerClient == 1_000)
        #expect(config.timeouts.requestHeaders == .seconds(10))
        #expect(config.timeouts.upstreamConnect == .seconds(5))
        #expect(config.timeouts.tunnelIdle == .seconds(300))
        #expect(config.timeouts.tunnelMaxDuration == nil)
    }

    @Test("durations and clusters are read as written")
    func durationsAndClusters() throws {
        let config = try ConfigLoader.parse(
            """
            clusters:
              - { name: api, endpoints: ["127.0.0.1:9001", "[::1]:9002"], connect_timeout: 250ms, pool_size: 8 }
            timeouts: { upstream_response: 2m, tunnel_max_duration: 1h }
            limits: { max_tunnels_per_client: 16 }
            """, path: "/x/c.yaml")
        let cluster = try #require(config.cluster(named: "api"))
        #expect(cluster.endpoints.map(\.description) == ["127.0.0.1:9001", "[::1]:9002"])
        #expect(cluster.connectTimeout == .milliseconds(250))
        #expect(cluster.poolSize == 8)
        #expect(config.timeouts.upstreamResponse == .seconds(120))
        #expect(config.timeouts.tunnelMaxDuration == .seconds(3600))
        #expect(config.limits.maxTunnelsPerClient == 16)
    }

    @Test("an unknown key is an error naming file, line and key path")
    func unknownKey() {
        let message = error(
            """
            listeners:
              - name: a
                address: 127.0.0.1
                prot: 3128
            """)
        #expect(message?.hasPrefix("/etc/moongate/test.yaml:4: listeners[0]") == true, "\(message ?? "no error")")
        #expect(message?.contains("prot") == true)
    }

    @Test("a bad value names its key path and what was expected")
    func badValues() {
        let duration = error("timeouts:\n  request_headers: soon\n")
        #expect(duration?.contains("test.yaml:2: timeouts.request_headers") == true, "\(duration ?? "no error")")
        #expect(duration?.contains("expected a duration") == true)
        let endpoint = error("clusters:\n  - { name: a, endpoints: [\"no-port\"] }\n")
        #expect(endpoint?.contains("clusters[0].endpoints") == true, "\(endpoint ?? "no error")")
    }

    @Test("duplicate names and invalid YAML are refused with a location")
    func duplicatesAndSyntax() {
        let duplicate = error("clusters:\n  - { name: a, endpoints: [\"127.0.0.1:1\"] }\n  - { name: a, endpoints: [\"127.0.0.1:2\"] }\n")
        #expect(duplicate?.contains("two clusters are named 'a'") == true, "\(duplicate ?? "no error")")
        let syntax = error("listeners: [\n")
        #expect(syntax?.contains("invalid YAML") == true, "\(syntax ?? "no error")")
        #expect(error("") != nil)
    }
}
