/// The chunked coding (RFC 9112 §7.1) decoded from a whole buffer at once, written apart from
/// Moongate's incremental `ChunkedDecoder` and with its rules: sizes of 1 to 15 hex digits; after
/// them optional spaces or tabs (in strict mode only before an extension), then nothing or `;` and
/// an extension free of control characters; lines of at most `lineLimit` bytes; CRLF after data;
/// trailer field lines within `maxTrailerBytes` in all (each counted with its CRLF).
public struct ReferenceChunked {
    public enum Outcome: Equatable {
        /// The last chunk and the trailers were read; `consumed` bytes belong to the body.
        case complete(data: [UInt8], consumed: Int)
        /// Valid so far but unfinished.
        case incomplete(data: [UInt8])
        /// Refused; `data` is what came before the fault.
        case refused(data: [UInt8])
    }

    public let strict: Bool
    public let maxTrailerBytes: Int
    public let lineLimit = 1024

    public init(strict: Bool, maxTrailerBytes: Int) {
        self.strict = strict
        self.maxTrailerBytes = maxTrailerBytes
    }

    public func decode(_ bytes: ArraySlice<UInt8>) -> Outcome {
        var data: [UInt8] = []
        var i = bytes.startIndex
        while true {
            // The chunk-size line.
            let sizeLine: ArraySlice<UInt8>
            switch line(bytes, from: i, limit: lineLimit) {
            case .bad: return .refused(data: data)
            case .missing: return .incomplete(data: data)
            case .found(let content, let next):
                sizeLine = content
                i = next
            }
            guard let size = chunkSize(sizeLine) else { return .refused(data: data) }
            if size == 0 { break }
            let available = min(size, bytes.endIndex - i)
            data += bytes[i..<(i + available)]
            guard available == size else { return .incomplete(data: data) }
            i += size
            for expected: UInt8 in [13, 10] {
                guard i < bytes.endIndex else { return .incomplete(data: data) }
                guard bytes[i] == expected else { return .refused(data: data) }
                i += 1
            }
        }
        var trailerBytes = 0
        while true {
            switch line(bytes, from: i, limit: maxTrailerBytes) {
            case .bad: return .refused(data: data)
            case .missing: return .incomplete(data: data)
            case .found(let content, let next):
                i = next
                if content.isEmpty { return .complete(data: data, consumed: i - bytes.startIndex) }
                trailerBytes += content.count + 2
                guard trailerBytes <= maxTrailerBytes, isFieldLine(content) else { return .refused(data: data) }
            }
        }
    }

    private enum Line {
        case found(ArraySlice<UInt8>, next: Int)
        case missing
        case bad
    }

    /// A CRLF-ended line from `start`: bad for a bare LF, or more than `limit` bytes before its CRLF.
    private func line(_ bytes: ArraySlice<UInt8>, from start: Int, limit: Int) -> Line {
        guard let lf = bytes[start...].firstIndex(of: 10) else {
            return bytes.endIndex - start > limit + 1 ? .bad : .missing
        }
        guard lf > start, bytes[lf - 1] == 13, lf - 1 - start <= limit else { return .bad }
        return .found(bytes[start..<(lf - 1)], next: lf + 1)
    }

    private func chunkSize(_ line: ArraySlice<UInt8>) -> Int? {
        let digits = line.prefix { $0 < 128 && Character(Unicode.Scalar($0)).isHexDigit }
        guard !digits.isEmpty, digits.count <= 15 else { return nil }
        let rest = line[digits.endIndex...]
        let afterSpace = rest.drop { $0 == 32 || $0 == 9 }
        if afterSpace.isEmpty {
            if strict && !rest.isEmpty { return nil }
        } else {
            guard afterSpace.first == 59, afterSpace.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else { return nil }
        }
        return Int(String(decoding: digits, as: UTF8.self), radix: 16)
    }

    private func isFieldLine(_ line: ArraySlice<UInt8>) -> Bool {
        guard let colon = line.firstIndex(of: 58), colon > line.startIndex,
            line[line.startIndex..<colon].allSatisfy(RawHead.isTokenByte)
        else { return false }
        return line[(colon + 1)...].allSatisfy { $0 == 9 || ($0 >= 32 && $0 != 127) }
    }
}
