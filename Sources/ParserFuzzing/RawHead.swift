/// An accepted head re-read from its bytes with nothing of the parsers' code: what RFC 9112 says a
/// head that may be accepted looks like, and how its body is framed. The oracles compare the
/// parsers' answers with this, so an accepted head that is ambiguous in any listed way is a crash.
public struct RawHead {
    /// The request line or status line, without its CRLF.
    public var startLine: ArraySlice<UInt8>
    /// Field names and values (values without surrounding spaces and tabs), in order.
    public var fields: [(name: ArraySlice<UInt8>, value: ArraySlice<UInt8>)]
    /// The longest line, without its CRLF.
    public var longestFieldLine: Int

    /// How the fields frame a body (RFC 9112 §6.3), before any rule about methods or status codes.
    public enum Framing: Equatable {
        case none
        case length(Int)
        case chunked
    }

    /// Why a head must not have been accepted.
    public struct Violation: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads `bytes`, a head that ends with CRLF CRLF, and throws when anything in it is ambiguous.
    public init(_ bytes: ArraySlice<UInt8>) throws(Violation) {
        var lines: [ArraySlice<UInt8>] = []
        var start = bytes.startIndex
        var k = bytes.startIndex
        while k < bytes.endIndex {
            let c = bytes[k]
            if c == 13 {
                guard k + 1 < bytes.endIndex, bytes[k + 1] == 10 else { throw Violation(description: "bare CR") }
                lines.append(bytes[start..<k])
                k += 2
                start = k
                continue
            }
            if c == 10 { throw Violation(description: "bare LF") }
            k += 1
        }
        guard start == bytes.endIndex, lines.count >= 2, lines.last!.isEmpty else {
            throw Violation(description: "a head must end with an empty line")
        }
        startLine = lines[0]
        fields = []
        longestFieldLine = 0
        for line in lines[1..<(lines.count - 1)] {
            longestFieldLine = max(longestFieldLine, line.count)
            guard let first = line.first, first != 32, first != 9 else { throw Violation(description: "obs-fold") }
            guard let colon = line.firstIndex(of: 58), colon > line.startIndex else {
                throw Violation(description: "field line without a name")
            }
            let name = line[line.startIndex..<colon]
            guard name.allSatisfy(Self.isTokenByte) else { throw Violation(description: "field name not a token") }
            var value = line[(colon + 1)...]
            while let c = value.first, c == 32 || c == 9 { value = value.dropFirst() }
            while let c = value.last, c == 32 || c == 9 { value = value.dropLast() }
            guard value.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
                throw Violation(description: "control character in a field value")
            }
            fields.append((name, value))
        }
    }

    /// The framing the fields say, or a violation: Content-Length and Transfer-Encoding together,
    /// a Content-Length that is not digits, differing Content-Lengths, Transfer-Encoding other
    /// than one `chunked`.
    public func framing() throws(Violation) -> Framing {
        var lengths: [Int] = []
        var codings = 0
        for (name, value) in fields {
            if Self.lowercased(name) == "content-length" {
                guard !value.isEmpty, value.count <= 18, value.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                    throw Violation(description: "Content-Length not a number")
                }
                lengths.append(value.reduce(0) { $0 * 10 + Int($1 - 48) })
            } else if Self.lowercased(name) == "transfer-encoding" {
                guard Self.lowercased(value) == "chunked" else { throw Violation(description: "Transfer-Encoding not chunked") }
                codings += 1
            }
        }
        guard codings <= 1 else { throw Violation(description: "Transfer-Encoding twice") }
        guard codings == 0 || lengths.isEmpty else { throw Violation(description: "Content-Length and Transfer-Encoding") }
        guard Set(lengths).count <= 1 else { throw Violation(description: "differing Content-Lengths") }
        if codings == 1 { return .chunked }
        return lengths.first.map { .length($0) } ?? .none
    }

    /// Whether a comma-separated field (`Connection`) lists `token`, any case.
    public func lists(_ fieldName: String, _ token: String) -> Bool {
        fields.contains { field in
            Self.lowercased(field.name) == fieldName
                && Self.lowercased(field.value).split(separator: ",").contains {
                    $0.trimmingSpaces() == token
                }
        }
    }

    /// Whether a field with this (lower-case) name is present.
    public func has(_ fieldName: String) -> Bool { fields.contains { Self.lowercased($0.name) == fieldName } }

    public static func lowercased(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// tchar (RFC 9110 §5.6.2), spelt out apart from the parsers' table.
    public static func isTokenByte(_ c: UInt8) -> Bool {
        if c >= 128 || c <= 32 { return false }
        return !"\"(),/:;<=>?@[\\]{}\u{7F}".utf8.contains(c)
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}
