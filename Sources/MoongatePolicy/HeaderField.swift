/// One HTTP header field. Names keep the case they arrived in; comparisons ignore case.
public struct HeaderField: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var value: String

    /// Creates a field.
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }

    /// True when the name matches `other`, ignoring ASCII case.
    @inlinable
    public func hasName(_ other: String) -> Bool { name.asciiCaseInsensitiveEquals(other) }

    public var description: String { "\(name): \(value)" }
}

extension String {
    /// ASCII case-insensitive equality, without allocating.
    @inlinable
    public func asciiCaseInsensitiveEquals(_ other: String) -> Bool {
        let a = self.utf8
        let b = other.utf8
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in
            x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= UInt8(ascii: "a") && (x | 0x20) <= UInt8(ascii: "z"))
        }
    }

    /// ASCII lower-case copy.
    public var asciiLowercased: String {
        if !utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) { return self }
        return String(decoding: utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}

extension Array where Element == HeaderField {
    /// The first value of the named header.
    public func first(named name: String) -> String? { first { $0.hasName(name) }?.value }

    /// Every value of the named header.
    public func values(named name: String) -> [String] { filter { $0.hasName(name) }.map(\.value) }
}
