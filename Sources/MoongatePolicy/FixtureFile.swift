import MoongateConfig

/// JSONL fixtures: one case per line, in the format of a plugin's `tests` entries (without the keys
/// only plugin tests have). Blank lines and lines starting with `#` are skipped.
extension DecisionCase {
    /// One case line of a fixture: its line number and the case, or why it is not one.
    public struct FixtureLine: Sendable {
        /// 1-based.
        public let line: Int
        public let parsed: Result<DecisionCase, CaseError>
    }

    /// Parses every case line of a JSONL text; a malformed line does not stop the others. An invalid
    /// JSON line's error names the byte column.
    public static func fixtureLines(_ text: String) -> [FixtureLine] {
        var lines: [FixtureLine] = []
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let trimmed = String(line).trimmingSpaces
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let number = index + 1
            do throws(CaseError) {
                let value: ConfigValue
                do {
                    value = try JSONValueParser.parse(line)
                } catch {
                    throw CaseError("invalid JSON at column \(error.column): \(error.message)")
                }
                let parsed = try DecisionCase(value, position: "line \(number)", origin: .fixture, line: number)
                lines.append(FixtureLine(line: number, parsed: .success(parsed)))
            } catch {
                lines.append(FixtureLine(line: number, parsed: .failure(error)))
            }
        }
        return lines
    }

    /// Parses a JSONL text, stopping at the first malformed line.
    /// - Throws: ``CaseError`` whose message starts with `file:line:`.
    public static func parseJSONL(_ text: String, file: String) throws(CaseError) -> [DecisionCase] {
        var cases: [DecisionCase] = []
        for line in fixtureLines(text) {
            switch line.parsed {
            case .success(let parsed): cases.append(parsed)
            case .failure(let error): throw CaseError("\(file):\(line.line): \(error.message)")
            }
        }
        return cases
    }
}
