import ArgumentParser
import Logging
import MoongateConfig
import MoongatePolicy
import MoongateProxy

/// `moongate decide --config FILE --request 'CONNECT example.org:443'`: a dry run of the proxy.
struct Decide: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what the proxy does with a request: policy's decision, the plugin, the edits, the address floor and what goes upstream.",
        discussion: """
            Requests are written as a request line: 'CONNECT example.org:443', 'GET http://example.org/ HTTP/1.1',
            'GET /path' (with --header 'Host: ...'), 'h2 GET https://example.org/', 'h2 CONNECT example.org:443',
            'h2 CONNECT chat.example.org:443/ws websocket' (extended CONNECT).
            HTTP/1.1 requests go through the proxy's own parser and limits; names are resolved (DNS, or
            --resolve name=address) and checked against the address floor, as the proxy does before dialling.
            """)

    @Option(name: .shortAndLong, help: "The config file.")
    var config: String = "configs/default.yaml"

    @Option(name: .shortAndLong, help: "The request line.")
    var request: String

    @Option(name: .customLong("header"), help: "A request header 'Name: value' (repeatable).")
    var headers: [String] = []

    @Option(help: "The client address.")
    var client: String = "127.0.0.1"

    @Option(name: .customLong("resolve"), help: "Use this address for a name instead of DNS: 'name=address' (repeatable, like curl's --resolve).")
    var resolve: [String] = []

    @Flag(help: "List every plugin and hook called, in order, with its answer and time, the composition step that chose the result, the edits and the floors' effect.")
    var trace = false

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
            var overrides: [String: [String]] = [:]
            for entry in resolve {
                let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw ValidationError("--resolve needs 'name=address', got '\(entry)'")
                }
                overrides[parts[0].lowercased(), default: []].append(parts[1].trimmingCharacters(in: "[]"))
            }
            let session: TLSSessionInfo?
            do {
                session = try tls.map { spec throws(CaseError) in try TLSSessionInfo(spec: spec) }
            } catch {
                throw ValidationError(error.message)
            }
            let report = try DryRun.run(
                config: loaded, instance: instance, line: request, headers: fields, client: ClientInfo(ip: client, session: session),
                resolve: overrides, trace: trace)
            print(Self.text(report).joined(separator: "\n"))
        } catch let error as ConfigError {
            printError("\(error)")
            throw ExitCode.failure
        } catch let error as PolicyLoadError {
            printError("\(error)")
            throw ExitCode.failure
        } catch let error as RequestError {
            printError("invalid request: \(error.reason) (the proxy answers \(error.status))")
            throw ExitCode.failure
        }
    }

    static func text(_ report: DryRunReport) -> [String] {
        let verdict = report.verdict
        var out = ["decision: \(verdict.outcome.decision.summary)", "plugin:   \(verdict.outcome.plugin ?? "(default)")"]
        if let tls = verdict.outcome.tunnelTLS {
            out.append("tls:      to the target, sni \(tls.serverName ?? "(the target's host)"), verify \(tls.verify)")
        }
        switch verdict.outcome.decision {
        case .deny(_, let reason, let extra), .respond(_, let reason, let extra):
            if let reason { out.append("reason:   \(reason)") }
            for field in extra { out.append("header:   \(field)") }
        case .fault(let fault):
            out.append("fault:    \(fault.kind): \(fault.message)")
        default:
            break
        }
        if let floor = report.floor { out.append("floor:    \(floor)") }
        out.append("result:   \(report.result)")
        if !verdict.edits.isEmpty {
            out.append("edits:")
            for edit in verdict.edits { out.append("  \(edit)") }
        }
        if let requestLine = report.upstreamRequest.first {
            // The head that goes upstream, as the proxy writes it (Host and framing are the proxy's).
            out.append("upstream request: \(requestLine)")
            out.append("upstream headers:")
            for line in report.upstreamRequest.dropFirst() { out.append("  \(line)") }
        } else if let upstream = verdict.upstreamHeaders {
            out.append("upstream headers:")
            for field in upstream { out.append("  \(field)") }
        }
        if let trace = report.request.trace {
            out.append("trace:")
            out.append(contentsOf: trace.record.lines)
        }
        return out
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
