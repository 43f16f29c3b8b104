import ArgumentParser
import Logging
import MoongateConfig
import MoongatePolicy
import MoongateProxy

#if canImport(Glibc)
import Glibc
#endif

/// Writes a line to standard error.
func printError(_ text: String) {
    let line = text + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// Sends every log line (the scripts' `moongate.log` and `print` among them) to standard error at
/// `level` and above, so standard output keeps only the command's own answer.
func logToStandardError(level: String) {
    let threshold = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = threshold
        return handler
    }
}

/// `moongate validate --config FILE`: config, scripts and their tests, like `nginx -t`. Every problem
/// is reported (every plugin that does not load, every failing test, every bad fixture line), each
/// with its file and line, then a summary line.
struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config file, its scripts and their tests (exit 0 when all is well, 1 otherwise).")

    @Option(name: .shortAndLong, help: "The config file.")
    var config: String = "configs/default.yaml"

    @Flag(name: .shortAndLong, help: "List every test case.")
    var verbose = false

    @Option(help: "Level of the lines scripts log while they load and run their tests (print is debug).")
    var logLevel: String = "warning"

    func run() throws {
        logToStandardError(level: logLevel)
        let spec: PolicySpec
        do {
            let loaded = try ConfigLoader.load(path: config)
            for warning in Self.plainTextPasswordWarnings(loaded.policy, configPath: config) { printError(warning) }
            for cluster in loaded.clusters where cluster.tls?.insecureSkipVerify == true {
                printError("\(config): warning: cluster \(cluster.name): tls.insecure_skip_verify is on, upstream certificates are not checked")
            }
            let tls = TLSCheck.problems(loaded)
            for file in tls.missing { printError("\(config): warning: \(file) does not exist (yet): serve will not start without it") }
            for problem in tls.unusable { printError("\(problem)") }
            if !tls.unusable.isEmpty { fail("\(tls.unusable.count) TLS file(s) cannot be used") }
            spec = try PolicySpec.read(loaded.policy)
        } catch {
            printError("\(error)")
            fail(nil)
        }
        let report = PolicyValidation.run(spec)
        if verbose { for result in report.results { print(result) } }
        for problem in report.problems { printError("\(problem)") }
        guard report.passed else { fail(report.summary) }
        let plugins = spec.plugins.map(\.name).joined(separator: ", ")
        print("\(config): configuration OK: \(spec.plugins.count) plugins (\(plugins)), \(report.results.count) tests passed")
    }

    /// One warning line per `proxy_auth` plugin whose config holds passwords in plain text (`users:`),
    /// with the config file's line of that key when it can be found. Warnings do not fail the check.
    static func plainTextPasswordWarnings(_ policy: PolicyConfig, configPath: String) -> [String] {
        let lines = ((try? readFile(configPath)) ?? "").split(separator: "\n", omittingEmptySubsequences: false)
        return policy.plugins.compactMap { plugin in
            guard plugin.file.hasSuffix("proxy_auth.lua"), plugin.config["users"] != nil else { return nil }
            // The `users:` line after the plugin's `name:` line, if the file is laid out that way.
            var line: Int?
            if let start = lines.firstIndex(where: { $0.contains("name: \(plugin.name)") }) {
                line = lines[start...].firstIndex { $0.drop(while: { $0 == " " }).hasPrefix("users:") }.map { $0 + 1 }
            }
            return "\(configPath)\(line.map { ":\($0)" } ?? ""): warning: plugin \(plugin.name): passwords in plain text "
                + "(config.users); give users_file: an htpasswd file of bcrypt or SHA-crypt hashes instead"
        }
    }

    /// Ends with the failure line (and exit status 1).
    private func fail(_ summary: String?) -> Never {
        printError("\(config): configuration test failed" + (summary.map { ": \($0)" } ?? ""))
        Self.exit(withError: ExitCode.failure)
    }
}
