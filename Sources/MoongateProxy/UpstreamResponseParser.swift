import MoongatePolicy
import NIOCore

/// What an upstream connection delivers, in order, for one exchange.
enum UpstreamPart {
    /// A response head (1xx heads come before the final one).
    case head(UpstreamResponseHead)
    /// Body bytes, with any chunked framing removed.
    case body(ByteBuffer)
    /// The trailer fields of a chunked response, right before its `.end` (only when there are some).
    case trailers([HeaderField])
    /// The final response is complete. After a tunnel head (101 to an upgrade, 2xx to a
    /// CONNECT) it comes right after the head, and later bytes are tunnel data.
    case end
}

/// Why an upstream response was refused: the exchange fails with 502.
struct UpstreamProtocolError: Error, Hashable, CustomStringConvertible {
    let reason: String
    var description: String { "invalid upstream response: \(reason)" }
}

/// A strict, incremental HTTP/1.1 response parser for upstream connections.
///
/// It replaces NIO's decoder on the upstream side: heads are indexed in place (no strings, no
/// header copies), bodies are delivered as slices of what was read. Strict where a lenient parser
/// opens response splitting: CRLF line ends only, no obs-fold, no whitespace before a colon, field
/// names are tokens, values free of control characters, Content-Length digits only (repeats must
/// agree), Transfer-Encoding only `chunked` and never with Content-Length, chunk sizes in hex with
/// bounded lines, a head within the configured size and count limits. Trailers are read, checked
/// and dropped (RFC 9112 §7.1.2 lets a recipient that removes the chunked coding discard them).
/// A connection that sends bytes when no response is due is refused.
///
/// A class, not a struct: `emit` hands an `.end` to the exchange, which may at once send the next
/// request on this connection and call ``expect(_:)`` — re-entering the parser while `feed` runs.
final class UpstreamResponseParser {
    /// What the request expects: HEAD responses have no body; tunnels switch to raw bytes.
    enum Expectation: Equatable {
        case response(head: Bool)
        /// An upgrade request: a 101 turns the connection into a tunnel.
        case upgrade
        /// A CONNECT sent to a parent proxy: any 2xx ends HTTP at its blank line.
        case connect
    }

    private enum State {
        /// No request is outstanding: any byte is an error.
        case idle
        case head
        case body(remaining: Int)
        case chunked
        case untilClose
        /// HTTP is over (a tunnel): bytes are handed back raw.
        case raw
    }

    private var state: State = .idle
    private var expectation: Expectation = .response(head: false)
    /// A partial head.
    private var pending = ByteBuffer()
    /// Where the search for the end of the pending head resumes.
    private var scanned = 0
    private var chunked: ChunkedDecoder
    /// A final response ended during the current `feed`: bytes after it in the same read came
    /// before the next request was sent, so they can never be its response (even if `.end`'s
    /// handler already sent that request and called ``expect(_:)``).
    private var finishedInThisRead = false
    private let maxHeadBytes: Int
    private let maxFields: Int
    /// The field index of the last head, reused for the next one (no allocation per response
    /// once the previous head is gone).
    private var fieldRanges: [UpstreamResponseHead.FieldRange] = []

    init(maxHeadBytes: Int, maxFields: Int) {
        self.maxHeadBytes = maxHeadBytes
        self.maxFields = maxFields
        self.chunked = ChunkedDecoder(strictSizes: false, maxTrailerBytes: maxHeadBytes, keepsTrailers: true)
        fieldRanges.reserveCapacity(16)
    }

    /// True while no response is due (idle in a pool).
    var isIdle: Bool { if case .idle = state { return true } else { return false } }

    /// True once the connection has become a tunnel.
    var isRaw: Bool { if case .raw = state { return true } else { return false } }

    /// A request was sent: a response is now due.
    func expect(_ expectation: Expectation) {
        self.expectation = expectation
        state = .head
        pending.clear()
        scanned = 0
    }

    /// Parses what was read. Returns the bytes left once the connection became a tunnel (nil otherwise).
    func feed(_ input: inout ByteBuffer, emit: (UpstreamPart) -> Void) throws(UpstreamProtocolError) -> ByteBuffer? {
        finishedInThisRead = false
        while input.readableBytes > 0 {
            if finishedInThisRead { throw UpstreamProtocolError(reason: "bytes received when no response was due") }
            switch state {
            case .idle:
                throw UpstreamProtocolError(reason: "bytes received when no response was due")
            case .raw:
                return input
            case .head:
                guard let head = try takeHead(&input) else { return nil }
                try startBody(of: head, emit: emit)
            case .body(let remaining):
                let take = min(remaining, input.readableBytes)
                emit(.body(input.readSlice(length: take)!))
                if take == remaining {
                    finish(emit: emit)
                } else {
                    state = .body(remaining: remaining - take)
                }
            case .untilClose:
                emit(.body(input.readSlice(length: input.readableBytes)!))
            case .chunked:
                let event: ChunkedDecoder.Event?
                do { event = try chunked.next(&input) } catch { throw UpstreamProtocolError(reason: error.reason) }
                switch event {
                case .data(let data)?: emit(.body(data))
                case .end?:
                    if !chunked.trailers.isEmpty { emit(.trailers(chunked.trailers)) }
                    finish(emit: emit)
                case nil: return nil
                }
            }
        }
        if case .raw = state { return input }
        return nil
    }

    /// The upstream finished sending. A close-delimited body ends here; anything else unfinished
    /// is a truncated response.
    func inputEnded(emit: (UpstreamPart) -> Void) throws(UpstreamProtocolError) {
        switch state {
        case .untilClose:
            finish(emit: emit)
        case .idle, .raw:
            break
        case .head where pending.readableBytes == 0:
            throw UpstreamProtocolError(reason: "closed before answering")
        default:
            throw UpstreamProtocolError(reason: "closed mid-response")
        }
    }

    private func finish(emit: (UpstreamPart) -> Void) {
        state = .idle
        finishedInThisRead = true
        emit(.end)
    }

    // MARK: - Heads

    /// Accumulates until the blank line; returns the head's bytes when complete.
    private func takeHead(_ input: inout ByteBuffer) throws(UpstreamProtocolError) -> ByteBuffer? {
        if pending.readableBytes == 0, let end = HTTP1Syntax.blankLine(in: input, from: 0) {
            // The common case: the whole head arrived in one read.
            return input.readSlice(length: end)
        }
        pending.writeBuffer(&input)
        if let end = HTTP1Syntax.blankLine(in: pending, from: max(0, scanned - 3)) {
            let head = pending.readSlice(length: end)!
            // Bytes after the head go back to the input, in order.
            input = pending
            pending = ByteBuffer()
            scanned = 0
            return head
        }
        scanned = pending.readableBytes
        guard pending.readableBytes <= maxHeadBytes else { throw UpstreamProtocolError(reason: "head too large") }
        return nil
    }

    /// Parses and checks a complete head, then decides how its body is framed.
    private func startBody(of raw: ByteBuffer, emit: (UpstreamPart) -> Void) throws(UpstreamProtocolError) {
        guard raw.readableBytes <= maxHeadBytes else { throw UpstreamProtocolError(reason: "head too large") }
        let parsed = try raw.withUnsafeReadableBytes { bytes in
            Result { () throws(UpstreamProtocolError) in try Self.parseHead(bytes, maxFields: maxFields, ranges: &fieldRanges) }
        }.get()
        let code = parsed.code
        let informational = code < 200 && code != 101
        let noBody = expectation == .response(head: true) || code == 204 || code == 304
        var framing = parsed.framing
        if informational || noBody { framing = .none }
        let tunnel = (expectation == .upgrade && code == 101) || (expectation == .connect && code / 100 == 2)
        if code == 101 && !tunnel { throw UpstreamProtocolError(reason: "101 to a request that asked for no upgrade") }
        let keepAlive = parsed.keepAlive && !tunnel && framing != .untilClose
        emit(.head(UpstreamResponseHead(
            code: code, raw: raw, ranges: parsed.ranges, reasonStart: parsed.reasonStart, reasonEnd: parsed.reasonEnd,
            isKeepAlive: keepAlive, connectionNamesFields: parsed.connectionNamesFields, framing: framing)))
        if tunnel {
            state = .raw
            emit(.end)
            return
        }
        if informational {
            state = .head  // the final response follows
            return
        }
        switch framing {
        case .none: finish(emit: emit)
        case .length(0): finish(emit: emit)
        case .length(let n): state = .body(remaining: n)
        case .chunked:
            chunked = ChunkedDecoder(strictSizes: false, maxTrailerBytes: maxHeadBytes, keepsTrailers: true)
            state = .chunked
        case .untilClose: state = .untilClose
        }
    }

    enum Framing: Equatable {
        case none
        case length(Int)
        case chunked
        case untilClose
    }

    struct ParsedHead {
        var code: Int
        var reasonStart: Int32
        var reasonEnd: Int32
        var ranges: [UpstreamResponseHead.FieldRange]
        var framing: Framing
        var keepAlive: Bool
        var connectionNamesFields: Bool
    }

    /// The status line and field lines of a head that ends with `\r\n\r\n`.
    static func parseHead(
        _ bytes: UnsafeRawBufferPointer, maxFields: Int, ranges: inout [UpstreamResponseHead.FieldRange]
    ) throws(UpstreamProtocolError) -> ParsedHead {
        let n = bytes.count
        // HTTP/1.x SP 3DIGIT [SP reason] CRLF
        guard n >= 16, bytes[0] == 72, bytes[1] == 84, bytes[2] == 84, bytes[3] == 80, bytes[4] == 47, bytes[5] == 49,
            bytes[6] == 46, bytes[7] == 48 || bytes[7] == 49, bytes[8] == 32
        else { throw UpstreamProtocolError(reason: "bad status line") }
        let minor = bytes[7] - 48
        var code = 0
        for i in 9..<12 {
            let d = bytes[i]
            guard d >= 48 && d <= 57 else { throw UpstreamProtocolError(reason: "bad status code") }
            code = code * 10 + Int(d - 48)
        }
        guard (100...599).contains(code) else { throw UpstreamProtocolError(reason: "bad status code") }
        var i = 12
        var reasonStart = 12
        if bytes[i] == 32 {
            i += 1
            reasonStart = i
            while bytes[i] != 13 {
                let c = bytes[i]
                guard c == 9 || (c >= 32 && c != 127) else { throw UpstreamProtocolError(reason: "control character in the reason phrase") }
                i += 1
            }
        }
        guard bytes[i] == 13, bytes[i + 1] == 10 else { throw UpstreamProtocolError(reason: "bad status line") }
        let reasonEnd = i
        i += 2
        ranges.removeAll(keepingCapacity: true)
        var contentLength: Int? = nil
        var chunked = false
        var close = false
        var keepAliveToken = false
        var namesFields = false
        while !(bytes[i] == 13 && bytes[i + 1] == 10) {
            var lineEnd = i
            while bytes[lineEnd] != 13 {
                lineEnd += 1
            }
            guard bytes[lineEnd + 1] == 10 else { throw UpstreamProtocolError(reason: "bare CR") }
            let field: HTTP1Syntax.FieldRange
            do { field = try HTTP1Syntax.field(bytes, from: i, to: lineEnd) } catch { throw UpstreamProtocolError(reason: error.reason) }
            guard ranges.count < maxFields else { throw UpstreamProtocolError(reason: "too many fields") }
            ranges.append(field)
            let (ns, ne, vs, ve) = (field.nameStart, field.nameEnd, field.valueStart, field.valueEnd)
            switch ne - ns {
            case 14 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "content-length"):
                var value = 0
                guard ve > vs, ve - vs <= 18 else { throw UpstreamProtocolError(reason: "bad Content-Length") }
                for k in Int(vs)..<Int(ve) {
                    let d = bytes[k]
                    guard d >= 48 && d <= 57 else { throw UpstreamProtocolError(reason: "bad Content-Length") }
                    value = value * 10 + Int(d - 48)
                }
                if let previous = contentLength, previous != value {
                    throw UpstreamProtocolError(reason: "conflicting Content-Length fields")
                }
                contentLength = value
            case 17 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "transfer-encoding"):
                guard !chunked, HTTP1Syntax.equalsFolded(bytes, vs, ve, "chunked") else {
                    throw UpstreamProtocolError(reason: "unsupported Transfer-Encoding")
                }
                chunked = true
            case 10 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "connection"):
                HTTP1Syntax.forEachToken(bytes, vs, ve) { s, e in
                    if HTTP1Syntax.equalsFolded(bytes, s, e, "close") {
                        close = true
                    } else if HTTP1Syntax.equalsFolded(bytes, s, e, "keep-alive") {
                        keepAliveToken = true
                    } else {
                        namesFields = true
                    }
                }
            default:
                break
            }
            i = lineEnd + 2
        }
        if chunked && contentLength != nil {
            throw UpstreamProtocolError(reason: "both Content-Length and Transfer-Encoding")
        }
        let framing: Framing = chunked ? .chunked : (contentLength.map { .length($0) } ?? .untilClose)
        let keepAlive = !close && (minor == 1 || keepAliveToken)
        return ParsedHead(
            code: code, reasonStart: Int32(reasonStart), reasonEnd: Int32(reasonEnd), ranges: ranges, framing: framing,
            keepAlive: keepAlive, connectionNamesFields: namesFields)
    }
}
