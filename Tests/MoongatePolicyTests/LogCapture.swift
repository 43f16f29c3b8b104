import Logging
import MoongatePolicy
import MoongateTesting
import Synchronization

/// Collects what a ``Logger`` logs, for tests that check the script log.
final class LogCapture: Sendable {
    /// One logged line.
    struct Line: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: Logger.Metadata

        /// A metadata value as text ("" when absent).
        subscript(key: String) -> String { metadata[key].map { "\($0)" } ?? "" }
    }

    private let storage = Mutex<[Line]>([])

    /// Every line so far.
    var lines: [Line] { storage.withLock { $0 } }

    /// A logger whose lines land here (every level).
    func logger(label: String = "moongate.script") -> Logger {
        Logger(label: label) { _ in Handler(capture: self) }
    }

    fileprivate func append(_ line: Line) { storage.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var metadataProvider: Logger.MetadataProvider? = nil
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            capture.append(Line(level: event.level, message: event.message.description, metadata: event.metadata ?? [:]))
        }
    }
}

/// A harness over inline plugins whose script log is captured.
func loggingHarness(_ scripts: [(name: String, source: String)], clusters: [String] = [], capture: LogCapture) throws -> ScriptHarness {
    let plugins = scripts.enumerated().map { index, script in
        PluginSource(name: script.name, path: "inline/\(script.name).lua", source: script.source, priority: index)
    }
    return try ScriptHarness(spec: PolicySpec(plugins: plugins, clusters: clusters), scriptLogger: capture.logger())
}
