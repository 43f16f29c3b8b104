import Yams

/// A YAML node with its key path and file: typed reads that fail with a located ``ConfigError``.
struct ConfigNode {
    let node: Node
    let path: String
    let file: String

    var line: Int? { node.mark?.line }

    func error(_ message: String) -> ConfigError {
        ConfigError(file: file, line: line, keyPath: path, message: message)
    }

    private func child(_ node: Node, key: String) -> ConfigNode {
        ConfigNode(node: node, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    /// The mapping's entries; a key outside `allowed` is an error, as is a duplicate key.
    func mapping(allowed: Set<String>) throws(ConfigError) -> [String: ConfigNode] {
        guard case .mapping(let map) = node else { throw error("expected a mapping") }
        var out: [String: ConfigNode] = [:]
        for (keyNode, value) in map {
            guard let key = keyNode.string else { throw error("keys must be strings") }
            let entry = child(value, key: key)
            guard allowed.contains(key) else {
                let known = allowed.sorted().joined(separator: ", ")
                throw ConfigError(
                    file: file, line: keyNode.mark?.line, keyPath: entry.path,
                    message: "unknown key '\(key)' (known keys: \(known))")
            }
            guard out[key] == nil else {
                throw ConfigError(file: file, line: keyNode.mark?.line, keyPath: entry.path, message: "duplicate key")
            }
            out[key] = entry
        }
        return out
    }

    func list() throws(ConfigError) -> [ConfigNode] {
        guard case .sequence(let seq) = node else { throw error("expected a list") }
        return seq.enumerated().map { ConfigNode(node: $1, path: "\(path)[\($0)]", file: file) }
    }

    func string() throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else { throw error("expected a non-empty string") }
        return scalar.string
    }

    func stringList() throws(ConfigError) -> [String] {
        try list().map { item throws(ConfigError) in try item.string() }
    }

    func int(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard case .scalar = node, let value = node.int else { throw error("expected an integer") }
        guard range.contains(value) else {
            throw error("\(value) is out of range (\(range.lowerBound)...\(range.upperBound))")
        }
        return value
    }

    func bool() throws(ConfigError) -> Bool {
        guard case .scalar = node, let value = node.bool else { throw error("expected true or false") }
        return value
    }

    /// A duration such as `250ms`, `5s`, `10m`, `1h` (a bare number means seconds).
    func duration() throws(ConfigError) -> Duration {
        let text = try string()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let n = Double(text.dropLast(suffix.count)), n >= 0 {
                return .milliseconds(Int64(n * scale * 1000))
            }
        }
        if let n = Double(text), n >= 0 { return .milliseconds(Int64(n * 1000)) }
        throw error("expected a duration such as 250ms, 5s, 10m or 1h, not '\(text)'")
    }

    /// A size such as `64KiB`, `16MiB`, `1GiB` or a number of bytes.
    func byteSize() throws(ConfigError) -> Int {
        let text = try string()
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("B", 1)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let n = Int(text.dropLast(suffix.count)), n >= 0 { return n * scale }
        }
        if let n = Int(text), n >= 0 { return n }
        throw error("expected a size such as 64KiB, 16MiB or a number of bytes, not '\(text)'")
    }

    /// Any value, as a plugin sees it.
    func value() -> ConfigValue {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if scalar.string == "~" || scalar.string == "null" || scalar.string.isEmpty { return .null }
                if let b = node.bool, ["true", "false"].contains(scalar.string) { return .bool(b) }
                if let i = node.int { return .int(i) }
                if let d = node.float, Double(scalar.string) != nil { return .double(d) }
            }
            return .string(scalar.string)
        case .sequence(let seq):
            return .array(seq.map { ConfigNode(node: $0, path: path, file: file).value() })
        case .mapping(let map):
            return .table(map.map { (key: $0.key.string ?? "", value: ConfigNode(node: $0.value, path: path, file: file).value()) })
        case .alias:
            return .null
        }
    }
}
