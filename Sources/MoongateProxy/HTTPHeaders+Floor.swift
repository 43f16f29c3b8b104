import MoongatePolicy
import NIOHTTP1

extension HTTPHeaders {
    /// Calls `body` with every field ``SanitizationFloor`` lets through: not hop-by-hop, and not
    /// named by a `Connection` header. Nothing is copied; a token list is built only when a
    /// `Connection` header names something beyond `keep-alive` and `close` (rare).
    func forEachPassingFloor(_ body: (String, String) -> Void) {
        var named: [String] = []
        for (name, value) in self where name.utf8.count == 10 && name.asciiCaseInsensitiveEquals("connection") {
            Self.forEachToken(of: value) { token in
                // `keep-alive` and `close` name nothing beyond the hop-by-hop set itself.
                if !SanitizationFloor.isHopByHop(token) && !token.asciiCaseInsensitiveEquals("close") {
                    named.append(token)
                }
            }
        }
        for (name, value) in self {
            if SanitizationFloor.isHopByHop(name) { continue }
            if !named.isEmpty && named.contains(where: { name.asciiCaseInsensitiveEquals($0) }) { continue }
            body(name, value)
        }
    }

    /// The comma-separated tokens of a list value, trimmed of spaces and tabs (empty ones skipped).
    private static func forEachToken(of value: String, _ body: (String) -> Void) {
        let bytes = value.utf8
        var start = bytes.startIndex
        while start < bytes.endIndex {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.endIndex
            var lower = start
            var upper = end
            while lower < upper, bytes[lower] == 0x20 || bytes[lower] == 0x09 { lower = bytes.index(after: lower) }
            while lower < upper {
                let last = bytes.index(before: upper)
                guard bytes[last] == 0x20 || bytes[last] == 0x09 else { break }
                upper = last
            }
            if lower < upper { body(String(value[lower..<upper])) }
            start = end < bytes.endIndex ? bytes.index(after: end) : end
        }
    }
}
