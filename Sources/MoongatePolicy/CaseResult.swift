/// A malformed test case or fixture line.
public struct CaseError: Error, Hashable, Sendable, CustomStringConvertible {
    public let message: String
    /// Creates an error.
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The result of one case (or why a malformed one could not run).
public struct CaseResult: Sendable, CustomStringConvertible {
    /// The plugin whose own test this is (nil for a fixture case).
    public let plugin: String?
    /// The file the case is written in: the plugin's script or the fixture.
    public let file: String?
    /// The line the case starts on in `file`, when known.
    public let line: Int?
    public let name: String
    /// Nil when the case passed.
    public let failure: String?
    public var passed: Bool { failure == nil }

    /// Creates a result.
    public init(plugin: String?, file: String?, line: Int? = nil, name: String, failure: String?) {
        self.plugin = plugin
        self.file = file
        self.line = line
        self.name = name
        self.failure = failure
    }

    /// `file:line`, `file`, or nil.
    public var location: String? { file.map { path in line.map { "\(path):\($0)" } ?? path } }

    public var description: String {
        let who = plugin.map { "\($0): " } ?? ""
        guard let failure else { return "ok   \(who)\(name)" }
        return "FAIL \(location.map { "\($0): " } ?? "")\(who)\(name): \(failure)"
    }

    /// The failure as a load error (step `test` for a plugin's test, `fixture` for a fixture case).
    public var loadError: PolicyLoadError? {
        guard let failure else { return nil }
        return PolicyLoadError(
            step: plugin == nil ? .fixture : .test, plugin: plugin, file: file ?? "-", knownLine: line, message: failure,
            testName: name)
    }
}
