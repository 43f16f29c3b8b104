import MoongateConfig

/// Parses one JSON text (a fixture line) into a ``ConfigValue``, keeping object keys in the order
/// written, and says where the first mistake is: the byte column (1-based) and what was expected.
enum JSONValueParser {
    /// Where and why a text is not JSON.
    struct Failure: Error {
        /// 1-based byte position in the text.
        let column: Int
        let message: String
    }

    /// Parses `text` as exactly one JSON value (surrounding spaces allowed).
    static func parse(_ text: Substring) throws(Failure) -> ConfigValue {
        var reader = Reader(bytes: Array(text.utf8))
        reader.skipSpaces()
        let value = try reader.value(depth: 0)
        reader.skipSpaces()
        if reader.index < reader.bytes.count { throw reader.failure("unexpected text after the value") }
        return value
    }

    private struct Reader {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        func failure(_ message: String) -> Failure { Failure(column: index + 1, message: message) }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpaces() {
            while let c = current, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { index += 1 }
        }

        mutating func expect(_ byte: UInt8, _ what: String) throws(Failure) {
            guard current == byte else { throw failure("expected \(what)") }
            index += 1
        }

        mutating func value(depth: Int) throws(Failure) -> ConfigValue {
            guard depth < 64 else { throw failure("nested too deeply") }
            switch current {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            case let c? where c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39): return try number()
            case nil: throw failure("unexpected end of the line")
            default: throw failure("unexpected character '\(Character(Unicode.Scalar(bytes[index])))'")
            }
        }

        mutating func literal(_ word: String, _ value: ConfigValue) throws(Failure) -> ConfigValue {
            for byte in word.utf8 {
                guard current == byte else { throw failure("invalid literal (expected '\(word)')") }
                index += 1
            }
            return value
        }

        mutating func object(depth: Int) throws(Failure) -> ConfigValue {
            index += 1
            var pairs: [(key: String, value: ConfigValue)] = []
            skipSpaces()
            if current == UInt8(ascii: "}") {
                index += 1
                return .table(pairs)
            }
            while true {
                skipSpaces()
                let keyAt = index
                guard current == UInt8(ascii: "\"") else { throw failure("expected a key in double quotes") }
                let key = try string()
                if pairs.contains(where: { $0.key == key }) {
                    throw Failure(column: keyAt + 1, message: "duplicate key '\(key)'")
                }
                skipSpaces()
                try expect(UInt8(ascii: ":"), "':' after a key")
                skipSpaces()
                pairs.append((key, try value(depth: depth + 1)))
                skipSpaces()
                if current == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                try expect(UInt8(ascii: "}"), "',' or '}'")
                return .table(pairs)
            }
        }

        mutating func array(depth: Int) throws(Failure) -> ConfigValue {
            index += 1
            var items: [ConfigValue] = []
            skipSpaces()
            if current == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                skipSpaces()
                items.append(try value(depth: depth + 1))
                skipSpaces()
                if current == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                try expect(UInt8(ascii: "]"), "',' or ']'")
                return .array(items)
            }
        }

        mutating func string() throws(Failure) -> String {
            index += 1
            var out: [UInt8] = []
            while true {
                guard let c = current else { throw failure("unterminated string") }
                if c == UInt8(ascii: "\"") {
                    index += 1
                    return String(decoding: out, as: UTF8.self)
                }
                if c < 0x20 { throw failure("control character in a string") }
                if c != UInt8(ascii: "\\") {
                    out.append(c)
                    index += 1
                    continue
                }
                index += 1
                guard let e = current else { throw failure("unterminated string") }
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    index += 1
                    out += Array(String(try unicodeScalar()).utf8)
                    continue
                default: throw failure("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
                }
                index += 1
            }
        }

        // After "\u": four hex digits, and a low surrogate's escape after a high one.
        mutating func unicodeScalar() throws(Failure) -> Character {
            let high = try hex4()
            if (0xD800..<0xDC00).contains(high) {
                guard current == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                    throw failure("a high surrogate must be followed by a low one")
                }
                index += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw failure("invalid low surrogate") }
                let scalar = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                return Character(Unicode.Scalar(scalar)!)
            }
            guard let scalar = Unicode.Scalar(high) else { throw failure("invalid \\u escape") }
            return Character(scalar)
        }

        mutating func hex4() throws(Failure) -> UInt32 {
            var value: UInt32 = 0
            for _ in 0..<4 {
                guard let c = current, let digit = Self.hexDigit(c) else { throw failure("expected four hex digits after \\u") }
                value = value << 4 | digit
                index += 1
            }
            return value
        }

        static func hexDigit(_ c: UInt8) -> UInt32? {
            switch c {
            case 0x30...0x39: UInt32(c - 0x30)
            case 0x41...0x46: UInt32(c - 0x41 + 10)
            case 0x61...0x66: UInt32(c - 0x61 + 10)
            default: nil
            }
        }

        mutating func number() throws(Failure) -> ConfigValue {
            let start = index
            var integral = true
            if current == UInt8(ascii: "-") { index += 1 }
            if current == 0x30, index + 1 < bytes.count, (0x30...0x39).contains(bytes[index + 1]) {
                throw failure("a number may not start with 0")
            }
            guard digits() > 0 else { throw failure("expected a digit") }
            if current == UInt8(ascii: ".") {
                integral = false
                index += 1
                guard digits() > 0 else { throw failure("expected a digit after '.'") }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                integral = false
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { throw failure("expected a digit in the exponent") }
            }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            if integral, let int = Int(text) { return .int(int) }
            guard let double = Double(text) else { throw Failure(column: start + 1, message: "invalid number") }
            return .double(double)
        }

        mutating func digits() -> Int {
            var count = 0
            while let c = current, c >= 0x30 && c <= 0x39 {
                index += 1
                count += 1
            }
            return count
        }
    }
}
