import ArgumentParser
import Logging
import MoongateConfig
import MoongatePolicy

/// `moongate decide --config FILE --request 'CONNECT example.org:443'`: a dry run of policy.
struct Decide: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what policy decides for a request, which plugin decided, and the header edits.",
        discussion: """
            Requests are written as a request line: 'CONNECT example.org:443', 'GET http://example.org/ HTTP/1.1',
            'GET /path' (with --header 'Host: ...'), 'h2 GET https://example.org/', 'h2 CONNECT example.org:443',
            'h2 CONNECT chat.example.org:443/ws websocket' (extended CONNECT).
            """)

    @Option(name: .shortAndLong, help: "The config file.")
    var config: String = "configs/default.yaml"

    @Option(name: .shortAndLong, help: "The request line.")
    var request: String

    @Option(name: .customLong("header"), help: "A request header 'Name: value' (repeatable).")
    var headers: [String] = []

    @Option(help: "The client address.")
    var client: String = "127.0.0.1"

    @Option(help: "The client came over TLS with these details: 'sni=a.test,alpn=h2,version=TLSv1.3,cipher=…,subject=CN=alice,sans=a.test|b.test,sha256=…' (any subset).")
    var tls: String?

    @Option(help: "Level of the lines scripts log, on standard error (print is debug).")
    var logLevel: String = "info"

    func run() throws {
        logToStandardError(level: logLevel)
        do {
            let loaded = try ConfigLoader.load(path: config)
            let spec = try PolicySpec.read(loaded.policy)
            let instance = try PolicyInstance(spec: spec, generationID: 1, stats: PolicyStats(), logger: Logger(label: "moongate.decide"))
            let fields = try headers.map { line -> HeaderField in
                guard let colon = line.firstIndex(of: ":") else {
                    throw ValidationError("--header needs 'Name: value', got '\(line)'")
                }
                return HeaderField(String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingSpaces)
            }
            let session: TLSSessionInfo?
            do {
                session = try tls.map { spec throws(CaseError) in try TLSSessionInfo(spec: spec) }
            } catch {
                throw ValidationError(error.message)
            }
            let parsed = try PolicyRequest.parse(line: request, headers: fields, client: ClientInfo(ip: client, session: session))
            let verdict = instance.evaluate(parsed)
            print("decision: \(verdict.outcome.decision.summary)")
            print("plugin:   \(verdict.outcome.plugin ?? "(default)")")
            if let tls = verdict.outcome.tunnelTLS {
                print("tls:      to the target, sni \(tls.serverName ?? "(the target's host)"), verify \(tls.verify)")
            }
            switch verdict.outcome.decision {
            case .deny(_, let reason, let extra), .respond(_, let reason, let extra):
                if let reason { print("reason:   \(reason)") }
                for field in extra { print("header:   \(field)") }
            case .fault(let fault):
                print("fault:    \(fault.kind): \(fault.message)")
            default:
                break
            }
            if !verdict.edits.isEmpty {
                print("edits:")
                for edit in verdict.edits { print("  \(edit)") }
            }
            if let upstream = verdict.upstreamHeaders {
                print("upstream headers:")
                for field in upstream { print("  \(field)") }
            }
        } catch let error as ConfigError {
            printError("\(error)")
            throw ExitCode.failure
        } catch let error as PolicyLoadError {
            printError("\(error)")
            throw ExitCode.failure
        } catch let error as RequestError {
            printError("invalid request: \(error.reason)")
            throw ExitCode.failure
        }
    }
}
