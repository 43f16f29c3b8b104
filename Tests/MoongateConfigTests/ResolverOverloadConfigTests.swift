import MoongateConfig
import Testing

/// The `resolver:` and `overload:` sections: defaults, values as written, and located errors.
@Suite("Resolver and overload configuration")
struct ResolverOverloadConfigTests {
    private func error(_ yaml: String) -> String? {
        do {
            _ = try ConfigLoader.parse(yaml, path: "/etc/moongate/test.yaml")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("without the sections: 16 lookup threads, a 5 s cache, and no overload guard")
    func defaults() throws {
        let config = try ConfigLoader.parse("event_loop_threads: 1\n", path: "/x/c.yaml")
        #expect(config.resolver.threads == 16)
        #expect(config.resolver.cacheTTL == .seconds(5))
        #expect(config.resolver.hosts.isEmpty)
        #expect(!config.overload.isEnabled)
        #expect(config.overload.retryAfterSeconds == 5)
    }

    @Test("hosts are pinned in order under their lower-case name; thresholds read as written")
    func valuesAsWritten() throws {
        let config = try ConfigLoader.parse(
            """
            resolver:
              threads: 4
              cache_ttl: 0s
              hosts:
                Dual.Test.: ["::1", "127.0.0.1"]
            overload:
              max_connections: 5
              max_buffered_bytes: 64KiB
              max_memory: 512MiB
              check_interval: 50ms
              retry_after: 2
              recover_ratio: 0.5
            """, path: "/x/c.yaml")
        #expect(config.resolver.threads == 4)
        #expect(config.resolver.cacheTTL == .zero)
        #expect(config.resolver.hosts == ["dual.test": ["::1", "127.0.0.1"]])
        #expect(config.overload.maxConnections == 5)
        #expect(config.overload.maxBufferedBytes == 64 * 1024)
        #expect(config.overload.maxMemory == 512 << 20)
        #expect(config.overload.checkInterval == .milliseconds(50))
        #expect(config.overload.retryAfterSeconds == 2)
        #expect(config.overload.recoverRatio == 0.5)
        #expect(config.overload.isEnabled)
    }

    @Test("a bad address, an unknown key or an out-of-range value names the file, line and key")
    func errors() {
        #expect(
            error("resolver:\n  hosts:\n    a.test: [\"example.org\"]\n")
                == "/etc/moongate/test.yaml:3: resolver.hosts.a.test: 'example.org' is not an IP address (resolver.hosts maps names to addresses)")
        #expect(error("resolver:\n  hosts:\n    \"a.test:443\": [\"10.0.0.1\"]\n")?.contains("is not a host name") == true)
        #expect(error("overload:\n  max_conections: 5\n")?.contains("test.yaml:2: overload.max_conections: unknown key") == true)
        #expect(error("overload:\n  recover_ratio: 2\n")?.contains("test.yaml:2: overload.recover_ratio") == true)
        #expect(error("resolver:\n  threads: 0\n")?.contains("test.yaml:2: resolver.threads: 0 is out of range") == true)
    }
}
