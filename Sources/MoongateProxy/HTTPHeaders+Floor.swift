import MoongatePolicy
import NIOHTTP1

extension HTTPHeaders {
    /// Applies ``SanitizationFloor`` to parsed headers in place: hop-by-hop fields and the fields
    /// a `Connection` header names are removed. Headers with none of them are left untouched
    /// (no copy), which is the common case for responses.
    mutating func applySanitizationFloor() {
        var found = false
        var hasConnection = false
        for (name, _) in self where SanitizationFloor.isHopByHop(name) {
            found = true
            if name.utf8.count == 10 && name.asciiCaseInsensitiveEquals("connection") { hasConnection = true }
        }
        guard found else { return }
        var named: [String] = []
        if hasConnection {
            for (name, value) in self where name.utf8.count == 10 && name.asciiCaseInsensitiveEquals("connection") {
                for token in value.split(separator: ",") {
                    let trimmed = String(token).trimmingSpaces
                    if !trimmed.isEmpty { named.append(trimmed) }
                }
            }
        }
        var kept = HTTPHeaders()
        kept.reserveCapacity(count)
        for (name, value) in self {
            if SanitizationFloor.isHopByHop(name) { continue }
            if !named.isEmpty && named.contains(where: { name.asciiCaseInsensitiveEquals($0) }) { continue }
            kept.add(name: name, value: value)
        }
        self = kept
    }
}
