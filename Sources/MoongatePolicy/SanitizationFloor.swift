/// What scripts can never undo: hop-by-hop headers (RFC 9110 §7.6.1), the headers a `Connection`
/// header names, `Proxy-Authorization` and `Proxy-Connection` never reach the next hop.
public enum SanitizationFloor {
    /// Hop-by-hop names removed from every forwarded message (lower-case).
    public static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
        "trailer", "transfer-encoding", "upgrade",
    ]

    /// True for a hop-by-hop name, compared without allocating (the length picks the candidates).
    @inlinable
    public static func isHopByHop(_ name: String) -> Bool {
        if let result = name.utf8.withContiguousStorageIfAvailable({ isHopByHop(bytes: UnsafeRawBufferPointer($0)) }) {
            return result
        }
        return Array(name.utf8).withUnsafeBytes { isHopByHop(bytes: $0) }
    }

    /// The same test on a name's raw bytes (the proxy copies upstream field lines without making strings).
    @inlinable
    public static func isHopByHop(bytes n: UnsafeRawBufferPointer) -> Bool {
        switch n.count {
        case 2: return asciiEqualsLowercase(n, "te")
        case 7: return asciiEqualsLowercase(n, "upgrade") || asciiEqualsLowercase(n, "trailer")
        case 10: return asciiEqualsLowercase(n, "connection") || asciiEqualsLowercase(n, "keep-alive")
        case 16: return asciiEqualsLowercase(n, "proxy-connection")
        case 17: return asciiEqualsLowercase(n, "transfer-encoding")
        case 18: return asciiEqualsLowercase(n, "proxy-authenticate")
        case 19: return asciiEqualsLowercase(n, "proxy-authorization")
        default: return false
        }
    }

    /// Removes what the sender's `Connection` header names, and every hop-by-hop field.
    /// Call it on the message as received, before script edits (so a client cannot remove a header
    /// the proxy adds), and again after them (so a script cannot add a hop-by-hop header back).
    public static func strip(_ headers: inout [HeaderField], keeping kept: Set<String> = []) {
        let named = headers.contains { $0.hasName("connection") } ? headers.connectionTokens : []
        guard headers.contains(where: { isHopByHop($0.name) }) || !named.isEmpty else { return }
        headers.removeAll { field in
            let drop = isHopByHop(field.name) || (!named.isEmpty && named.contains { field.hasName($0) })
            return drop && (kept.isEmpty || !kept.contains { field.hasName($0) })
        }
    }

    /// Strips the floor, applies the edits, and strips the fixed hop-by-hop set again.
    public static func apply(_ edits: [HeaderEdit], to headers: inout [HeaderField], keeping kept: Set<String> = []) {
        strip(&headers, keeping: kept)
        guard !edits.isEmpty else { return }
        for edit in edits { edit.apply(to: &headers) }
        headers.removeAll { field in
            isHopByHop(field.name) && (kept.isEmpty || !kept.contains { field.hasName($0) })
        }
    }
}

/// One header edit made by a script through the `edit` object.
public struct HeaderEdit: Hashable, Sendable, CustomStringConvertible {
    /// What the edit does.
    public enum Operation: Hashable, Sendable { case remove, set, append }
    public let operation: Operation
    /// Lower-case name.
    public let name: String
    public let value: String?

    /// Creates an edit.
    public init(_ operation: Operation, _ name: String, _ value: String? = nil) {
        self.operation = operation
        self.name = name
        self.value = value
    }

    /// Applies the edit.
    public func apply(to headers: inout [HeaderField]) {
        switch operation {
        case .remove:
            headers.removeAll { $0.hasName(name) }
        case .set:
            headers.removeAll { $0.hasName(name) }
            headers.append(HeaderField(name, value ?? ""))
        case .append:
            headers.append(HeaderField(name, value ?? ""))
        }
    }

    public var description: String {
        switch operation {
        case .remove: "remove \(name)"
        case .set: "set \(name): \(value ?? "")"
        case .append: "append \(name): \(value ?? "")"
        }
    }
}
