import MoongatePolicy
import NIOCore

/// The chunked transfer coding (RFC 9112 §7.1), removed incrementally for both parsers: data goes
/// out as slices of what was read; sizes, the CRLF after each chunk's data and the trailer lines
/// are checked. Trailer fields are kept in ``trailers`` when `keepsTrailers` (a response that may
/// go on to an HTTP/2 client, where gRPC needs them), else dropped (a recipient that removes the
/// coding may discard them, §7.1.2). Chunk-size lines are bounded (1 KiB), trailers by `maxTrailerBytes`.
struct ChunkedDecoder {
    /// What the next step gave.
    enum Event {
        case data(ByteBuffer)
        /// The last chunk and its trailer section have been read: the message ends.
        case end
    }

    private enum State {
        case size
        case data(remaining: Int)
        case dataEnd(sawCR: Bool)
        case trailers
    }

    private var state = State.size
    /// A partial chunk-size or trailer line.
    private var line = ByteBuffer()
    private var trailerBytes = 0
    /// Requests: whitespace after a chunk size only before an extension (hardening.md §A.13).
    private let strictSizes: Bool
    private let maxTrailerBytes: Int
    private let keepsTrailers: Bool
    /// The trailer fields of the message that just ended (with `keepsTrailers`), as received.
    private(set) var trailers: [HeaderField] = []

    init(strictSizes: Bool, maxTrailerBytes: Int, keepsTrailers: Bool = false) {
        self.strictSizes = strictSizes
        self.maxTrailerBytes = maxTrailerBytes
        self.keepsTrailers = keepsTrailers
    }

    /// Decodes from `input`; nil when it is used up before anything more could be given.
    mutating func next(_ input: inout ByteBuffer) throws(HTTP1SyntaxError) -> Event? {
        while input.readableBytes > 0 {
            switch state {
            case .size:
                guard let sizeLine = try takeLine(&input, limit: 1024) else { return nil }
                let size = try HTTP1Syntax.chunkSize(sizeLine, strict: strictSizes)
                state = size == 0 ? .trailers : .data(remaining: size)
                trailerBytes = 0
                if size == 0 && keepsTrailers { trailers.removeAll(keepingCapacity: true) }
            case .data(let remaining):
                let take = min(remaining, input.readableBytes)
                state = take == remaining ? .dataEnd(sawCR: false) : .data(remaining: remaining - take)
                return .data(input.readSlice(length: take)!)
            case .dataEnd(let sawCR):
                // Exactly CRLF after the data, byte by byte (it may be split across reads).
                let byte = input.readInteger(as: UInt8.self)!
                guard byte == (sawCR ? 10 : 13) else { throw HTTP1SyntaxError(reason: "chunk data longer than its size") }
                state = sawCR ? .size : .dataEnd(sawCR: true)
            case .trailers:
                guard let trailer = try takeLine(&input, limit: maxTrailerBytes) else { return nil }
                if trailer.isEmpty {
                    state = .size
                    return .end
                }
                trailerBytes += trailer.count + 2
                guard trailerBytes <= maxTrailerBytes else {
                    throw HTTP1SyntaxError(reason: "trailers too large", tooLarge: true)
                }
                let checked = trailer.withUnsafeBytes { bytes in
                    Result { () throws(HTTP1SyntaxError) in try HTTP1Syntax.field(bytes, from: 0, to: bytes.count) }
                }
                switch checked {
                case .failure(let error): throw error
                case .success(let range) where keepsTrailers:
                    trailers.append(
                        HeaderField(
                            String(decoding: trailer[Int(range.nameStart)..<Int(range.nameEnd)], as: UTF8.self),
                            String(decoding: trailer[Int(range.valueStart)..<Int(range.valueEnd)], as: UTF8.self)))
                case .success: break
                }
            }
        }
        return nil
    }

    /// A CRLF-terminated line (without the CRLF), across reads; nil until it is complete.
    private mutating func takeLine(_ input: inout ByteBuffer, limit: Int) throws(HTTP1SyntaxError) -> [UInt8]? {
        while let byte = input.readInteger(as: UInt8.self) {
            if byte == 10 {
                let bytes = line.readBytes(length: line.readableBytes) ?? []
                line.clear()
                guard bytes.last == 13 else { throw HTTP1SyntaxError(reason: "bare LF") }
                return Array(bytes.dropLast())
            }
            line.writeInteger(byte)
            guard line.readableBytes <= limit + 1 else { throw HTTP1SyntaxError(reason: "line too long") }
        }
        return nil
    }
}
