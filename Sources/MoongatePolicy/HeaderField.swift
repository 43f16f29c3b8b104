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
    /// ASCII case-insensitive equality, without allocating (a byte loop over contiguous UTF-8).
    @inlinable
    public func asciiCaseInsensitiveEquals(_ other: String) -> Bool {
        let a = self.utf8
        let b = other.utf8
        guard a.count == b.count else { return false }
        let fast = a.withContiguousStorageIfAvailable { x in
            b.withContiguousStorageIfAvailable { y in asciiFoldedEqual(x, y) }
        }
        if let fast, let result = fast { return result }
        return zip(a, b).allSatisfy { x, y in asciiFoldedEqual(x, y) }
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

/// Two equally long byte runs equal under ASCII case folding.
@inlinable
func asciiFoldedEqual(_ x: UnsafeBufferPointer<UInt8>, _ y: UnsafeBufferPointer<UInt8>) -> Bool {
    for i in 0..<x.count where !asciiFoldedEqual(x[i], y[i]) { return false }
    return true
}

/// Two bytes equal under ASCII case folding (letters only; other bytes must match exactly).
@inlinable
func asciiFoldedEqual(_ x: UInt8, _ y: UInt8) -> Bool {
    x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= UInt8(ascii: "a") && (x | 0x20) <= UInt8(ascii: "z"))
}

/// ASCII case-insensitive comparison of raw bytes (a name as received) with a lower-case literal.
@inlinable
public func asciiEqualsLowercase(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    guard bytes.count == literal.utf8CodeUnitCount else { return false }
    let lower = literal.utf8Start
    for i in 0..<bytes.count {
        let c = bytes[i]
        if (c >= 65 && c <= 90 ? c | 0x20 : c) != lower[i] { return false }
    }
    return true
}
