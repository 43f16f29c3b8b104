import MoongateProxy
import NIOCore
import NIOPosix
import Testing

/// The proxy in-process, over real loopback sockets, with small NIO upstreams.
@Suite("Proxy over loopback", .serialized)
struct ProxyIntegrationTests {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let pool = NIOThreadPool(numberOfThreads: 1)

    init() { pool.start() }

    @Test("CX-TERM-1, CX-H1-1: a terminated CONNECT gets a bare 200, then an echo relay")
    func terminatedConnect() async throws {
        let accepted = AcceptCounter()
        let echo = try await startUpstream(group: group, http: false, accepted: accepted)
        let target = "127.0.0.1:\(echo.localAddress!.port!)"
        let (proxy, port) = try await startProxy(group: group, pool: pool, yaml: """
            listeners: [{ name: t, address: 127.0.0.1, port: 0 }]
            timeouts: { drain: 1s }
            policy:
              plugins_dir: ../plugins
              plugins:
                - { name: connect_allowlist, config: { allow: ["*"], allow_addresses: ["\(target)"] } }
            """)
        let client = try TestClient(port: port)
        client.send("CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\nearly")
        let answer = client.read(until: "early")
        #expect(answer == "HTTP/1.1 200 Connection established\r\n\r\nearly")
        client.send("more")
        #expect(client.read(until: "more") == "more")
        await proxy.shutdown()
        try await echo.close()
    }

    @Test("CX-DIS-1: CONNECT that no plugin enables is a local 403 and nothing is dialled")
    func connectOffByDefault() async throws {
        let accepted = AcceptCounter()
        let echo = try await startUpstream(group: group, http: false, accepted: accepted)
        let target = "127.0.0.1:\(echo.localAddress!.port!)"
        let (proxy, port) = try await startProxy(group: group, pool: pool, yaml: """
            listeners: [{ name: t, address: 127.0.0.1, port: 0 }]
            timeouts: { drain: 1s }
            policy:
              plugins_dir: ../plugins
              plugins: [{ name: header_sanitizer }]
            """)
        let client = try TestClient(port: port)
        client.send("CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        let answer = client.readToEnd()
        #expect(answer.hasPrefix("HTTP/1.1 403"))
        #expect(answer.ranges(of: "HTTP/1.1").count == 1, "the pipelined request is never answered")
        #expect(accepted.value == 0)
        await proxy.shutdown()
        try await echo.close()
    }

    @Test("routed requests reuse one pooled upstream connection")
    func pooledForwarding() async throws {
        let accepted = AcceptCounter()
        let origin = try await startUpstream(group: group, http: true, accepted: accepted)
        let (proxy, port) = try await startProxy(group: group, pool: pool, yaml: """
            listeners: [{ name: t, address: 127.0.0.1, port: 0 }]
            timeouts: { drain: 1s }
            clusters: [{ name: origin, endpoints: ["127.0.0.1:\(origin.localAddress!.port!)"] }]
            policy:
              plugins_dir: ../plugins
              plugins:
                - { name: host_router, config: { routes: [{ host: "*", cluster: origin }] } }
            """)
        // One keep-alive client connection lives on one event loop, whose pool keeps the upstream.
        let client = try TestClient(port: port)
        for path in ["/one", "/two", "/three"] {
            client.send("GET \(path) HTTP/1.1\r\nHost: app.test\r\n\r\n")
            let answer = client.read(until: "ok \(path)")
            #expect(answer.hasPrefix("HTTP/1.1 200"))
            #expect(answer.hasSuffix("ok \(path)"))
        }
        #expect(accepted.value == 1)
        await proxy.shutdown()
        try await origin.close()
    }
}
