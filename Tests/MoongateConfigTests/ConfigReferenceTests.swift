import MoongateConfig
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// docs/config.md against the loader: every key the loader accepts is documented in its section,
/// and every documented key is accepted.
@Suite("The config reference (docs/config.md)")
struct ConfigReferenceTests {
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/MoongateConfigTests/ConfigReferenceTests.swift
        return parts.joined(separator: "/")
    }()

    /// A config whose `section` holds one unknown key, with what the loader needs to reach it.
    static func probe(_ section: String) -> String {
        let key = "zz_not_a_key"
        switch section {
        case ".": return "\(key): 1\n"
        case "listeners[]": return "listeners:\n  - \(key): 1\n"
        case "clusters[]": return "clusters:\n  - \(key): 1\n"
        case "policy.plugins[]": return "policy:\n  plugins:\n    - \(key): 1\n"
        default:
            // a nested mapping: `a.b` becomes a: { b: { key: 1 } }
            let parts = section.split(separator: ".")
            var text = ""
            for (depth, part) in parts.enumerated() { text += String(repeating: "  ", count: depth) + "\(part):\n" }
            return text + String(repeating: "  ", count: parts.count) + "\(key): 1\n"
        }
    }

    /// The keys the loader accepts in `section`: the list its unknown-key error gives.
    static func loaderKeys(_ section: String) -> [String]? {
        do {
            _ = try ConfigLoader.parse(probe(section), path: "/tmp/probe.yaml")
            return nil
        } catch {
            let text = "\(error)"
            guard let start = text.firstRange(of: "known keys: ") else { return nil }
            let list = text[start.upperBound...].prefix { $0 != ")" }
            return list.split(separator: ",").map { String($0.drop(while: { $0 == " " })) }.sorted()
        }
    }

    /// The keys docs/config.md documents per section: the first backquoted word of each `##`
    /// heading names a section, and each table row that starts with a backquoted word names a key.
    static func documentedKeys() throws -> [String: [String]] {
        guard let file = fopen("\(root)/docs/config.md", "rb") else { throw ReferenceMissing() }
        defer { fclose(file) }
        var sections: [String: [String]] = [:]
        var current: String?
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("## ") {
                current = firstQuoted(in: text)
                if let current { sections[current] = sections[current] ?? [] }
            } else if let section = current, text.hasPrefix("| `"), let key = firstQuoted(in: text) {
                sections[section, default: []].append(key)
            }
        }
        return sections
    }

    static func firstQuoted(in text: String) -> String? {
        guard let open = text.firstIndex(of: "`") else { return nil }
        let rest = text[text.index(after: open)...]
        guard let close = rest.firstIndex(of: "`") else { return nil }
        return String(rest[..<close])
    }

    struct ReferenceMissing: Error {}

    @Test("the key list matches what the loader accepts, section by section")
    func listMatchesTheLoader() {
        for (section, keys) in ConfigKeys.sections {
            #expect(Self.loaderKeys(section) == keys.sorted(), "section \(section)")
        }
    }

    @Test("docs/config.md documents every key of every section, and nothing the loader refuses")
    func referenceMatchesTheList() throws {
        let documented = try Self.documentedKeys()
        for (section, keys) in ConfigKeys.sections {
            guard let listed = documented[section] else {
                Issue.record("docs/config.md has no '## `\(section)`' section")
                continue
            }
            #expect(listed.sorted() == keys.sorted(), "section \(section): documented vs accepted")
            #expect(Set(listed).count == listed.count, "section \(section) documents a key twice")
        }
        let unknown = Set(documented.keys).subtracting(ConfigKeys.sections.map(\.section))
        #expect(unknown.isEmpty, "sections the loader does not have: \(unknown.sorted())")
    }
}
