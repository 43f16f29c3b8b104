import MoongateConfig
import Testing

/// The client deadlines under `timeouts`: their edge defaults, values read as written, and bad
/// values refused with the file, the line and the key path.
@Suite("Client timeouts")
struct ClientTimeoutsTests {
    private func load(_ yaml: String) throws -> Timeouts {
        try ConfigLoader.parse(yaml, path: "/etc/moongate/t.yaml").timeouts
    }

    private func error(_ yaml: String) -> String? {
        do {
            _ = try load(yaml)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("the edge defaults apply when the keys are absent")
    func defaults() throws {
        let client = try load("timeouts: { request_headers: 5s }\n").client
        #expect(client.requestBodyIdle == .seconds(15))
        #expect(client.requestBody == .seconds(300))
        #expect(client.keepaliveIdle == .seconds(60))
        #expect(client.responseWriteIdle == .seconds(30))
    }

    @Test("values are read as written, beside the other timeouts")
    func values() throws {
        let timeouts = try load(
            """
            timeouts:
              request_headers: 2s
              request_body_idle: 250ms
              request_body: 2m
              keepalive_idle: 1h
              response_write_idle: 45
            """)
        #expect(timeouts.requestHeaders == .seconds(2))
        #expect(timeouts.client.requestBodyIdle == .milliseconds(250))
        #expect(timeouts.client.requestBody == .seconds(120))
        #expect(timeouts.client.keepaliveIdle == .seconds(3600))
        #expect(timeouts.client.responseWriteIdle == .seconds(45))
    }

    @Test("zero, negative, unknown units and more than a day are refused with file, line and key",
          arguments: ["request_body_idle", "request_body", "keepalive_idle", "response_write_idle"])
    func badValues(key: String) {
        for value in ["0s", "5ms", "-1s", "2d", "25h", "soon"] {
            let message = error("timeouts:\n  request_headers: 5s\n  \(key): \(value)\n")
            #expect(message?.hasPrefix("/etc/moongate/t.yaml:3: timeouts.\(key): ") == true, "\(value): \(message ?? "no error")")
        }
    }
}
