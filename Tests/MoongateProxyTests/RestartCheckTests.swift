@testable import MoongateConfig
@testable import MoongateProxy
import Foundation
import Testing

/// What a reload may change: everything but the listeners, the admin listener and the threads.
@Suite("Restart check")
struct RestartCheckTests {
    private func config(_ yaml: String) throws -> MoongateConfiguration {
        try ConfigLoader.parse(yaml, path: "/tmp/restart-check.yaml")
    }

    private let base = """
        listeners:
          - { name: main, address: 127.0.0.1, port: 3128 }
        admin: { address: 127.0.0.1, port: 9901 }
        clusters:
          - { name: app, endpoints: ["127.0.0.1:8080"] }
        policy:
          plugins: []
        """

    @Test("clusters, limits and timeouts reload; an unchanged config has nothing to restart for")
    func reloadable() throws {
        let running = try config(base)
        let edited = try config(
            base.replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:9090") + "\nlimits: { max_header_count: 10 }\ntimeouts: { upstream_response: 3s }\n")
        #expect(RestartCheck.changes(from: running, to: running).isEmpty)
        #expect(RestartCheck.changes(from: running, to: edited).isEmpty)
    }

    @Test("a listener added, removed or changed, the admin and the threads need a restart, each named")
    func restartRequired() throws {
        let running = try config(base)
        let moved = try config(base.replacingOccurrences(of: "port: 3128", with: "port: 3129"))
        #expect(RestartCheck.changes(from: running, to: moved) == ["listener main changed"])
        #expect(RestartCheck.message(RestartCheck.changes(from: running, to: moved)) == "restart required: listeners changed (listener main changed)")
        let added = try config(base.replacingOccurrences(of: "admin:", with: "  - { name: extra, address: 127.0.0.1, port: 1 }\nadmin:"))
        #expect(RestartCheck.changes(from: running, to: added) == ["listener extra added"])
        #expect(RestartCheck.changes(from: added, to: running) == ["listener extra removed"])
        let admin = try config(base.replacingOccurrences(of: "port: 9901", with: "port: 9902") + "\nevent_loop_threads: 3\n")
        #expect(RestartCheck.changes(from: running, to: admin) == ["admin changed", "event_loop_threads changed"])
        #expect(RestartCheck.message(["admin changed"]).hasPrefix("restart required: fixed settings changed"))
    }
}
