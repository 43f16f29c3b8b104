/// A configuration problem, located by file, line and key path (`configs/x.yaml:12: clusters[0].port: …`).
public struct ConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file the problem is in.
    public let file: String
    /// The 1-based line, when known.
    public let line: Int?
    /// The key path, such as `policy.plugins[1].name`.
    public let keyPath: String
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(file: String, line: Int?, keyPath: String, message: String) {
        self.file = file
        self.line = line
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return keyPath.isEmpty ? "\(location): \(message)" : "\(location): \(keyPath): \(message)"
    }
}
