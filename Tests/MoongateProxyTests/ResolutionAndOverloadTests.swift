import MoongateConfig
import MoongatePolicy
@testable import MoongateProxy
import NIOCore
import NIOPosix
import Testing

/// The address floor applied to each address of a name, lookups shared per name, and the
/// overload guard's hysteresis. No socket is dialled here (the end-to-end tests do that).
@Suite("Resolution and overload")
struct ResolutionAndOverloadTests {
    private func addresses(_ ips: [String]) throws -> [SocketAddress] {
        try ips.map { try SocketAddress(ipAddress: $0, port: 0) }
    }

    @Test("every address passes the floor on its own; the port is set on each that passes")
    func floorPerAddress() throws {
        let passed = try TargetResolver.checked(
            addresses(["127.0.0.2", "93.184.215.14", "::1", "2001:db8::1", "127.0.0.1"]), host: "a.test", port: 8443,
            allowed: ["127.0.0.1"], floor: true)
        #expect(passed.map { $0.ipAddress! } == ["93.184.215.14", "127.0.0.1"])
        #expect(passed.map(\.port) == [8443, 8443])
    }

    @Test("a name left with no address is refused with the class of the last address dropped")
    func refusedWithLastClass() throws {
        #expect(throws: DialError.self) {
            try TargetResolver.checked(addresses(["10.1.2.3", "169.254.169.254"]), host: "x.test", port: 80, allowed: [], floor: true)
        }
        do {
            _ = try TargetResolver.checked(addresses(["10.1.2.3", "169.254.169.254"]), host: "x.test", port: 80, allowed: [], floor: true)
        } catch {
            #expect("\(error)" == "x.test resolves to a metadata address")
            #expect(UpstreamDialer.failure(error).0 == 403)
        }
    }

    @Test("cluster endpoints skip the floor")
    func clustersSkipFloor() throws {
        let passed = try TargetResolver.checked(addresses(["127.0.0.1", "10.0.0.1"]), host: "c.test", port: 1, allowed: [], floor: false)
        #expect(passed.count == 2)
    }

    @Test("a name in resolver.hosts is answered from the config, in order, with the floor applied")
    func staticHosts() throws {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        var config = ResolverConfig()
        config.hosts = ["pinned.test": ["::1", "10.0.0.9", "127.0.0.1"]]
        let resolver = TargetResolver(threadPool: pool, config: config)
        let found = try resolver.resolve(
            Authority(host: "pinned.test.", port: 81), allowed: ["::1", "127.0.0.1"], on: group.next()
        ).wait()
        #expect(found.map { $0.ipAddress! } == ["::1", "127.0.0.1"])
        #expect(found.allSatisfy { $0.port == 81 })
    }

    @Test("the overload starts past the threshold and ends only at the recovery level")
    func hysteresis() {
        var level = ResourceLevel(threshold: 5, recoverRatio: 0.9)
        #expect(level.recoverAt == 4)
        #expect(!level.update(5) && !level.overloaded)
        #expect(level.update(6) && level.overloaded)
        #expect(!level.update(5) && level.overloaded)
        #expect(level.update(4) && !level.overloaded)
    }
}
