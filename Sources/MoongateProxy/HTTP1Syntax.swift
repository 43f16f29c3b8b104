import MoongatePolicy
import NIOCore

/// Why bytes are not HTTP/1.1 (each side maps it to its own answer: 400 to a client, 502 for an upstream).
struct HTTP1SyntaxError: Error, Hashable {
    let reason: String
    /// Over a size limit (a client gets 431, not 400).
    var tooLarge = false
}

/// The HTTP/1.1 grammar both parsers share (RFC 9110 §5, RFC 9112 §2–§7), on raw bytes.
enum HTTP1Syntax {
    /// Offsets of one field line in a head (name, and value without surrounding whitespace).
    struct FieldRange {
        var nameStart: Int32
        var nameEnd: Int32
        var valueStart: Int32
        var valueEnd: Int32
    }

    /// ASCII case-insensitive comparison of `bytes[start..<end]` with a lower-case literal.
    static func equalsFolded(_ bytes: UnsafeRawBufferPointer, _ start: Int32, _ end: Int32, _ literal: StaticString) -> Bool {
        asciiEqualsLowercase(UnsafeRawBufferPointer(rebasing: bytes[Int(start)..<Int(end)]), literal)
    }

    /// The comma-separated tokens of a list value (trimmed, empty ones skipped), as ranges.
    static func forEachToken(_ bytes: UnsafeRawBufferPointer, _ start: Int32, _ end: Int32, _ body: (Int32, Int32) -> Void) {
        var i = Int(start)
        let stop = Int(end)
        while i < stop {
            var j = i
            while j < stop && bytes[j] != UInt8(ascii: ",") { j += 1 }
            var lower = i
            var upper = j
            while lower < upper && (bytes[lower] == 0x20 || bytes[lower] == 0x09) { lower += 1 }
            while upper > lower && (bytes[upper - 1] == 0x20 || bytes[upper - 1] == 0x09) { upper -= 1 }
            if lower < upper { body(Int32(lower), Int32(upper)) }
            i = j + 1
        }
    }

    /// The index just past `\r\n\r\n`, if present.
    static func blankLine(in buffer: ByteBuffer, from start: Int) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count >= 4 else { return nil }
            var i = start
            while i + 3 < bytes.count {
                if bytes[i + 3] != 10 {
                    i += bytes[i + 3] == 13 ? 1 : 4
                    continue
                }
                if bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 { return i + 4 }
                i += 1
            }
            return nil
        }
    }

    /// One `name: value` line (without its CRLF): a token name right before the colon, a value of
    /// visible characters, spaces and tabs (obs-text allowed), surrounding whitespace trimmed.
    static func field(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) throws(HTTP1SyntaxError) -> FieldRange {
        var colon = start
        while colon < end && bytes[colon] != 58 {
            guard isTokenByte(bytes[colon]) else {
                throw HTTP1SyntaxError(reason: colon == start ? "obs-fold or empty field name" : "invalid field name")
            }
            colon += 1
        }
        guard colon < end, colon > start else { throw HTTP1SyntaxError(reason: "field line without a name and colon") }
        var vs = colon + 1
        var ve = end
        while vs < ve && (bytes[vs] == 32 || bytes[vs] == 9) { vs += 1 }
        while ve > vs && (bytes[ve - 1] == 32 || bytes[ve - 1] == 9) { ve -= 1 }
        for k in vs..<ve {
            let c = bytes[k]
            guard c == 9 || (c >= 32 && c != 127) else { throw HTTP1SyntaxError(reason: "control character in a field value") }
        }
        return FieldRange(nameStart: Int32(start), nameEnd: Int32(colon), valueStart: Int32(vs), valueEnd: Int32(ve))
    }

    /// tchar (RFC 9110 §5.6.2).
    @inline(__always)
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: return true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: return true
        default: return false
        }
    }

    /// `1*HEXDIG [ chunk-ext ]`, at most 15 digits. `strict` (requests) allows whitespace after the
    /// size only before a `;` extension (hardening.md §A.13: `5 ` is refused).
    static func chunkSize(_ line: [UInt8], strict: Bool) throws(HTTP1SyntaxError) -> Int {
        var size = 0
        var digits = 0
        var i = 0
        while i < line.count {
            let c = line[i]
            let v: Int
            switch c {
            case 48...57: v = Int(c - 48)
            case 65...70: v = Int(c - 55)
            case 97...102: v = Int(c - 87)
            default: v = -1
            }
            if v < 0 { break }
            digits += 1
            guard digits <= 15 else { throw HTTP1SyntaxError(reason: "chunk size too large") }
            size = size * 16 + v
            i += 1
        }
        guard digits > 0 else { throw HTTP1SyntaxError(reason: "bad chunk size") }
        let sizeEnd = i
        while i < line.count && (line[i] == 32 || line[i] == 9) { i += 1 }
        if strict && i > sizeEnd && i == line.count { throw HTTP1SyntaxError(reason: "whitespace after a chunk size") }
        if i < line.count {
            guard line[i] == 59 else { throw HTTP1SyntaxError(reason: "bad chunk size") }
            for c in line[i...] where !(c == 9 || (c >= 32 && c != 127)) {
                throw HTTP1SyntaxError(reason: "control character in a chunk extension")
            }
        }
        return size
    }
}
