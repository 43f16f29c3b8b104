import MoongatePolicy
import NIOHTTP1

extension HTTPHeaders {
    /// Calls `body` with every field ``SanitizationFloor`` lets through: not hop-by-hop, and not
    /// named by a `Connection` header. Nothing is copied; the token list is built only when a
    /// `Connection` header is present.
    func forEachPassingFloor(_ body: (String, String) -> Void) {
        var named: [String] = []
        for (name, value) in self where name.utf8.count == 10 && name.asciiCaseInsensitiveEquals("connection") {
            for token in value.split(separator: ",") {
                let trimmed = String(token).trimmingSpaces
                // `keep-alive` and `close` name nothing beyond the hop-by-hop set itself.
                if !trimmed.isEmpty && !SanitizationFloor.isHopByHop(trimmed) && !trimmed.asciiCaseInsensitiveEquals("close") {
                    named.append(trimmed)
                }
            }
        }
        for (name, value) in self {
            if SanitizationFloor.isHopByHop(name) { continue }
            if !named.isEmpty && named.contains(where: { name.asciiCaseInsensitiveEquals($0) }) { continue }
            body(name, value)
        }
    }
}
