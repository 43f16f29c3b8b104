/// Where each case of a plugin's `tests` table starts in its source, found by scanning the source:
/// Lua keeps no positions of tables, so this reads the text the way the Lua lexer does (comments,
/// short and long strings skipped) and finds the constructor after `tests =` whose list items are
/// the cases. Tests built some other way (in a loop, by `table.insert`) get no lines.
enum TestCaseLines {
    /// The line each case starts on, in order, or nil when no `tests = { … }` constructor with
    /// exactly `count` list items is found. An item that is not a table constructor has no line.
    static func lines(in source: String, count: Int) -> [Int?]? {
        let tokens = LuaTokens(source).all()
        var index = 0
        while index + 2 < tokens.count {
            defer { index += 1 }
            guard tokens[index].text == "tests", tokens[index].isName, tokens[index + 1].text == "=",
                tokens[index + 2].text == "{"
            else { continue }
            let items = listItems(tokens, openingAt: index + 2)
            if items.count == count { return items }
        }
        return nil
    }

    /// The first line of the `tests =` assignment, a fallback for messages about the table itself.
    static func tableLine(in source: String) -> Int? {
        let tokens = LuaTokens(source).all()
        for index in tokens.indices.dropLast(2)
        where tokens[index].isName && tokens[index].text == "tests" && tokens[index + 1].text == "=" {
            return tokens[index].line
        }
        return nil
    }

    /// The positional items of the constructor whose `{` is at `open`: each one's line when it is
    /// itself a constructor. Keyed fields (`name = …`, `[k] = …`) are skipped.
    private static func listItems(_ tokens: [LuaToken], openingAt open: Int) -> [Int?] {
        var items: [Int?] = []
        var depth = 0
        var itemStart = true
        var index = open
        while index < tokens.count {
            let token = tokens[index]
            if depth == 1 && itemStart && token.text != "}" {
                itemStart = false
                let keyed = token.text == "[" || (token.isName && index + 1 < tokens.count && tokens[index + 1].text == "=")
                if !keyed { items.append(token.text == "{" ? token.line : nil) }
            }
            switch token.text {
            case "{", "(", "[": depth += 1
            case "}", ")", "]":
                depth -= 1
                if depth == 0 { return items }
            case ",", ";":
                if depth == 1 { itemStart = true }
            default: break
            }
            index += 1
        }
        return items
    }
}

/// A token of Lua source: only its text (punctuation and names; other tokens are "·") and line.
struct LuaToken {
    let text: String
    let line: Int
    let isName: Bool
}

/// A small Lua 5.4 lexer: enough to find brackets, names, `=` and separators outside strings and
/// comments, with the line each starts on.
struct LuaTokens {
    private let bytes: [UInt8]
    private var index = 0
    private var line = 1

    init(_ source: String) { bytes = Array(source.utf8) }

    /// Every token of the source.
    func all() -> [LuaToken] {
        var lexer = self
        var tokens: [LuaToken] = []
        while let token = lexer.next() { tokens.append(token) }
        return tokens
    }

    private func byte(at offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }

    private mutating func next() -> LuaToken? {
        skipSpaceAndComments()
        guard let c = byte(at: 0) else { return nil }
        let startLine = line
        if Self.isNameStart(c) {
            let start = index
            while let d = byte(at: 0), Self.isNameStart(d) || Self.isDigit(d) { index += 1 }
            return LuaToken(text: String(decoding: bytes[start..<index], as: UTF8.self), line: startLine, isName: true)
        }
        if Self.isDigit(c) || (c == UInt8(ascii: ".") && byte(at: 1).map(Self.isDigit) == true) {
            skipNumber()
            return LuaToken(text: "·", line: startLine, isName: false)
        }
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            skipShortString(quote: c)
            return LuaToken(text: "·", line: startLine, isName: false)
        case UInt8(ascii: "["):
            if let level = longBracketLevel() {
                skipLongBracket(level: level)
                return LuaToken(text: "·", line: startLine, isName: false)
            }
        case UInt8(ascii: "="), UInt8(ascii: "~"), UInt8(ascii: "<"), UInt8(ascii: ">"):
            if byte(at: 1) == UInt8(ascii: "=") {
                index += 2
                return LuaToken(text: "·", line: startLine, isName: false)
            }
        case UInt8(ascii: "."):
            if byte(at: 1) == UInt8(ascii: ".") {
                index += byte(at: 2) == UInt8(ascii: ".") ? 3 : 2
                return LuaToken(text: "·", line: startLine, isName: false)
            }
        case UInt8(ascii: ":"):
            if byte(at: 1) == UInt8(ascii: ":") {
                index += 2
                return LuaToken(text: "·", line: startLine, isName: false)
            }
        default:
            break
        }
        index += 1
        return LuaToken(text: String(UnicodeScalar(c)), line: startLine, isName: false)
    }

    private mutating func newline() {
        let c = bytes[index]
        index += 1
        if let d = byte(at: 0), (d == 0x0A || d == 0x0D), d != c { index += 1 }  // \r\n or \n\r is one
        line += 1
    }

    private mutating func skipSpaceAndComments() {
        while let c = byte(at: 0) {
            if c == 0x0A || c == 0x0D {
                newline()
            } else if c == 0x20 || c == 0x09 || c == 0x0B || c == 0x0C {
                index += 1
            } else if c == UInt8(ascii: "-") && byte(at: 1) == UInt8(ascii: "-") {
                index += 2
                if byte(at: 0) == UInt8(ascii: "["), let level = longBracketLevel() {
                    skipLongBracket(level: level)
                } else {
                    while let d = byte(at: 0), d != 0x0A && d != 0x0D { index += 1 }
                }
            } else {
                return
            }
        }
    }

    // At "[": the level of a long bracket ("[[" is 0, "[==[" is 2), or nil when this is not one.
    private func longBracketLevel() -> Int? {
        var offset = 1
        while byte(at: offset) == UInt8(ascii: "=") { offset += 1 }
        return byte(at: offset) == UInt8(ascii: "[") ? offset - 1 : nil
    }

    private mutating func skipLongBracket(level: Int) {
        index += level + 2
        while let c = byte(at: 0) {
            if c == 0x0A || c == 0x0D {
                newline()
                continue
            }
            index += 1
            guard c == UInt8(ascii: "]") else { continue }
            var equals = 0
            while byte(at: equals) == UInt8(ascii: "=") { equals += 1 }
            if equals == level && byte(at: equals) == UInt8(ascii: "]") {
                index += equals + 1
                return
            }
        }
    }

    private mutating func skipShortString(quote: UInt8) {
        index += 1
        while let c = byte(at: 0) {
            if c == quote {
                index += 1
                return
            }
            if c == 0x0A || c == 0x0D { return }  // unfinished: the compiler reports it
            if c == UInt8(ascii: "\\") {
                index += 1
                if let d = byte(at: 0), d == 0x0A || d == 0x0D {
                    newline()
                } else if byte(at: 0) == UInt8(ascii: "z") {
                    index += 1
                    while let d = byte(at: 0), d == 0x20 || d == 0x09 || d == 0x0A || d == 0x0D || d == 0x0B || d == 0x0C {
                        if d == 0x0A || d == 0x0D { newline() } else { index += 1 }
                    }
                } else {
                    index += 1
                }
                continue
            }
            index += 1
        }
    }

    private mutating func skipNumber() {
        while let c = byte(at: 0) {
            if Self.isNameStart(c) || Self.isDigit(c) || c == UInt8(ascii: ".") {
                let exponent = c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "p") || c == UInt8(ascii: "P")
                index += 1
                if exponent, let d = byte(at: 0), d == UInt8(ascii: "+") || d == UInt8(ascii: "-") { index += 1 }
            } else {
                return
            }
        }
    }

    private static func isNameStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_")
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
}
