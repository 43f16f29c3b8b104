import MoongateConfig
import MoongatePolicy
import NIOCore

/// What a client connection delivers, in order, per request.
enum ClientRequestPart {
    case head(ClientRequestHead)
    /// Body bytes, with any chunked framing removed.
    case body(ByteBuffer)
    /// The request is complete (trailers are dropped).
    case end
}

/// How a request's body is framed (RFC 9112 §6.3).
enum RequestBodyFraming: Equatable {
    case none
    case length(Int)
    case chunked
}

/// A parsed request head: the request line and its field lines as sent.
struct ClientRequestHead {
    let method: String
    let uri: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    let minorVersion: Int
    let fields: [HeaderField]
    let framing: RequestBodyFraming
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    let isKeepAlive: Bool
    /// `Connection: upgrade` with an `Upgrade` field: after this request, the bytes are not HTTP.
    let isUpgrade: Bool

    var isHEAD: Bool { method == "HEAD" }
    var isCONNECT: Bool { method == "CONNECT" }
    var version: String { minorVersion == 0 ? "HTTP/1.0" : "HTTP/1.1" }
}

/// Why a request was refused: the client gets `status` and the connection closes.
struct ClientRequestError: Error, Hashable {
    let status: Int
    let reason: String
}

/// A strict, incremental HTTP/1.1 request parser for client connections (RFC 9112).
///
/// Strict where a lenient parser lets requests be smuggled (hardening.md §A): CRLF line ends only,
/// a token method, a request-target of visible ASCII, `HTTP/1.0` or `HTTP/1.1`, no obs-fold, no
/// whitespace before a colon, token field names, values free of control characters,
/// Content-Length digits only (repeats must agree), Transfer-Encoding exactly `chunked` (once) and
/// never with Content-Length, chunk sizes of at most 15 hex digits on bounded lines with nothing
/// but an extension after them, CRLF after chunk data. Every refusal is a ``ClientRequestError``:
/// 400; 414 for a request line over its limit; 431 for a field line, or a head, over the size or
/// field-count limits (hardening.md §1.5: 8 KiB, 8 KiB, 60 KiB, 100 fields). After a CONNECT head,
/// and after an upgrade request, HTTP is over: the rest is handed back as raw bytes.
final class ClientRequestParser {
    private enum State {
        case head
        case body(remaining: Int)
        case chunked
        /// HTTP is over: bytes are handed back raw.
        case raw
        case failed
    }

    private var state: State = .head
    /// The request being read switches the connection to raw bytes when it ends.
    private var endsHTTP = false
    /// A partial head.
    private var pending = ByteBuffer()
    private var scanned = 0
    private var chunked = ChunkedDecoder(strictSizes: true, maxTrailerBytes: 0)
    /// The pending head's request line is known to be within its limit.
    private var requestLineEnded = false
    /// Before a request line: the last read ended with the CR of an empty line.
    private var emptyLineCR = false
    private let maxHeadBytes: Int
    private let maxFields: Int
    private let maxRequestLine: Int
    private let maxFieldLine: Int
    /// The fields of the last head, reused for the next one (no allocation per request once the
    /// previous request is gone).
    private var fields: [HeaderField] = []

    init(maxHeadBytes: Int, maxFields: Int, maxRequestLine: Int = 8 * 1024, maxFieldLine: Int = 8 * 1024) {
        self.maxHeadBytes = maxHeadBytes
        self.maxFields = maxFields
        self.maxRequestLine = maxRequestLine
        self.maxFieldLine = maxFieldLine
    }

    convenience init(limits: Limits) {
        self.init(
            maxHeadBytes: limits.maxHeaderBytes, maxFields: limits.maxHeaderCount,
            maxRequestLine: limits.maxRequestLineBytes, maxFieldLine: limits.maxHeaderFieldBytes)
    }

    /// Parses what was read. Returns the bytes left once HTTP is over (nil otherwise).
    func feed(_ input: inout ByteBuffer, emit: (ClientRequestPart) -> Void) throws(ClientRequestError) -> ByteBuffer? {
        do {
            return try parse(&input, emit: emit)
        } catch {
            state = .failed
            throw error
        }
    }

    private func parse(_ input: inout ByteBuffer, emit: (ClientRequestPart) -> Void) throws(ClientRequestError) -> ByteBuffer? {
        while input.readableBytes > 0 {
            switch state {
            case .failed:
                return nil
            case .raw:
                return input
            case .head:
                guard let raw = try takeHead(&input) else { return nil }
                let head = try parseHead(raw)
                emit(.head(head))
                endsHTTP = head.isCONNECT || head.isUpgrade
                switch head.framing {
                case .none, .length(0): finish(emit: emit)
                case .length(let n): state = .body(remaining: n)
                case .chunked:
                    chunked = ChunkedDecoder(strictSizes: true, maxTrailerBytes: maxHeadBytes)
                    state = .chunked
                }
            case .body(let remaining):
                let take = min(remaining, input.readableBytes)
                emit(.body(input.readSlice(length: take)!))
                if take == remaining { finish(emit: emit) } else { state = .body(remaining: remaining - take) }
            case .chunked:
                let event: ChunkedDecoder.Event?
                do {
                    event = try chunked.next(&input)
                } catch {
                    throw ClientRequestError(status: error.tooLarge ? 431 : 400, reason: error.reason)
                }
                switch event {
                case .data(let data)?: emit(.body(data))
                case .end?: finish(emit: emit)
                case nil: return nil
                }
            }
        }
        if case .raw = state { return input }
        return nil
    }

    private func finish(emit: (ClientRequestPart) -> Void) {
        state = endsHTTP ? .raw : .head
        emit(.end)
    }

    private static func bad(_ reason: String) -> ClientRequestError { ClientRequestError(status: 400, reason: reason) }

    // MARK: - Heads

    /// Accumulates until the blank line; returns the head's bytes when complete.
    private func takeHead(_ input: inout ByteBuffer) throws(ClientRequestError) -> ByteBuffer? {
        if pending.readableBytes == 0 {
            try skipEmptyLines(&input)
            if input.readableBytes == 0 { return nil }
            if let end = try Self.headEnd(in: input, from: 0) {
                guard end <= maxHeadBytes else { throw tooLarge(input) }
                return input.readSlice(length: end)
            }
        }
        pending.writeBuffer(&input)
        if let end = try Self.headEnd(in: pending, from: max(0, scanned - 3)) {
            guard end <= maxHeadBytes else { throw tooLarge(pending) }
            let head = pending.readSlice(length: end)!
            input = pending
            pending = ByteBuffer()
            scanned = 0
            requestLineEnded = false
            return head
        }
        scanned = pending.readableBytes
        if !requestLineEnded && pending.readableBytes > maxRequestLine + 2 {
            // Checked once per head: a slow client cannot make this scan run per byte.
            guard pending.readableBytesView.prefix(maxRequestLine + 2).contains(10) else { throw Self.requestLineTooLong }
            requestLineEnded = true
        }
        guard pending.readableBytes <= maxHeadBytes else { throw tooLarge(pending) }
        return nil
    }

    /// RFC 9112 §2.2: empty lines before a request line are ignored, however the reads cut them (a
    /// CR that ends a read waits for its LF in ``emptyLineCR``); a CR without its LF is refused.
    private func skipEmptyLines(_ input: inout ByteBuffer) throws(ClientRequestError) {
        while let byte = input.getInteger(at: input.readerIndex, as: UInt8.self) {
            if emptyLineCR {
                guard byte == 10 else { throw Self.bad("bare CR") }
                emptyLineCR = false
            } else if byte != 13 {
                return
            } else {
                emptyLineCR = true
            }
            input.moveReaderIndex(forwardBy: 1)
        }
    }

    /// The index just past the `\r\n\r\n` that ends a head, if present. A LF without its CR is
    /// refused at once (hardening.md §A.8), not left to time out.
    private static func headEnd(in buffer: ByteBuffer, from start: Int) throws(ClientRequestError) -> Int? {
        let end = buffer.withUnsafeReadableBytes { bytes -> Int in
            var k = start
            while k < bytes.count {
                if bytes[k] == 10 {
                    guard k > 0, bytes[k - 1] == 13 else { return -1 }
                    if k >= 3, bytes[k - 2] == 10, bytes[k - 3] == 13 { return k + 1 }
                }
                k += 1
            }
            return 0
        }
        if end < 0 { throw bad("bare LF") }
        return end == 0 ? nil : end
    }

    private static let requestLineTooLong = ClientRequestError(status: 414, reason: "request line too long")

    /// A head over the size limit: 414 when its request line alone is too long, 431 otherwise.
    private func tooLarge(_ head: ByteBuffer) -> ClientRequestError {
        head.readableBytesView.prefix(maxRequestLine + 2).contains(10)
            ? ClientRequestError(status: 431, reason: "request head too large") : Self.requestLineTooLong
    }

    /// Parses and checks a complete head (it ends with `\r\n\r\n`).
    private func parseHead(_ raw: ByteBuffer) throws(ClientRequestError) -> ClientRequestHead {
        try raw.withUnsafeReadableBytes { bytes in
            Result { () throws(ClientRequestError) in try parseHead(bytes) }
        }.get()
    }

    private func parseHead(_ bytes: UnsafeRawBufferPointer) throws(ClientRequestError) -> ClientRequestHead {
        let bad = Self.bad
        // method SP request-target SP HTTP/1.x CRLF (empty lines before it were skipped as they came)
        let methodStart = 0
        var i = methodStart
        while HTTP1Syntax.isTokenByte(bytes[i]) { i += 1 }
        guard i > methodStart, bytes[i] == 32 else { throw bad("bad request line") }
        let method = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[methodStart..<i]), as: UTF8.self)
        i += 1
        let uriStart = i
        while bytes[i] > 32 && bytes[i] < 127 { i += 1 }
        guard i > uriStart, bytes[i] == 32 else { throw bad("bad request-target") }
        let uri = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[uriStart..<i]), as: UTF8.self)
        i += 1
        guard i + 9 < bytes.count, bytes[i] == 72, bytes[i + 1] == 84, bytes[i + 2] == 84, bytes[i + 3] == 80,
            bytes[i + 4] == 47, bytes[i + 6] == 46, bytes[i + 8] == 13, bytes[i + 9] == 10,
            (48...57).contains(bytes[i + 5]), (48...57).contains(bytes[i + 7])
        else { throw bad("bad request line") }
        guard bytes[i + 5] == 49, bytes[i + 7] == 48 || bytes[i + 7] == 49 else {
            throw ClientRequestError(status: 505, reason: "HTTP version not supported")
        }
        let minor = Int(bytes[i + 7] - 48)
        i += 10
        guard i - methodStart <= maxRequestLine + 2 else { throw Self.requestLineTooLong }
        fields.removeAll(keepingCapacity: true)
        if fields.capacity < 12 { fields.reserveCapacity(12) }
        var contentLength: Int? = nil
        var chunked = false
        var close = false
        var keepAliveToken = false
        var upgradeToken = false
        var upgradeField = false
        while !(bytes[i] == 13 && bytes[i + 1] == 10) {
            var lineEnd = i
            while bytes[lineEnd] != 13 { lineEnd += 1 }
            guard bytes[lineEnd + 1] == 10 else { throw bad("bare CR") }
            guard lineEnd - i <= maxFieldLine else { throw ClientRequestError(status: 431, reason: "header field too large") }
            let field: HTTP1Syntax.FieldRange
            do { field = try HTTP1Syntax.field(bytes, from: i, to: lineEnd) } catch { throw bad(error.reason) }
            guard fields.count < maxFields else { throw ClientRequestError(status: 431, reason: "too many header fields") }
            let (ns, ne, vs, ve) = (field.nameStart, field.nameEnd, field.valueStart, field.valueEnd)
            switch ne - ns {
            case 14 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "content-length"):
                var value = 0
                guard ve > vs, ve - vs <= 18 else { throw bad("bad Content-Length") }
                for k in Int(vs)..<Int(ve) {
                    let d = bytes[k]
                    guard d >= 48 && d <= 57 else { throw bad("bad Content-Length") }
                    value = value * 10 + Int(d - 48)
                }
                if let previous = contentLength, previous != value { throw bad("conflicting Content-Length fields") }
                contentLength = value
            case 17 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "transfer-encoding"):
                guard !chunked, HTTP1Syntax.equalsFolded(bytes, vs, ve, "chunked") else {
                    throw bad("unsupported Transfer-Encoding")
                }
                chunked = true
            case 10 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "connection"):
                HTTP1Syntax.forEachToken(bytes, vs, ve) { s, e in
                    if HTTP1Syntax.equalsFolded(bytes, s, e, "close") {
                        close = true
                    } else if HTTP1Syntax.equalsFolded(bytes, s, e, "keep-alive") {
                        keepAliveToken = true
                    } else if HTTP1Syntax.equalsFolded(bytes, s, e, "upgrade") {
                        upgradeToken = true
                    }
                }
            case 7 where HTTP1Syntax.equalsFolded(bytes, ns, ne, "upgrade"):
                upgradeField = true
            default:
                break
            }
            fields.append(HeaderField(
                String(decoding: UnsafeRawBufferPointer(rebasing: bytes[Int(ns)..<Int(ne)]), as: UTF8.self),
                String(decoding: UnsafeRawBufferPointer(rebasing: bytes[Int(vs)..<Int(ve)]), as: UTF8.self)))
            i = lineEnd + 2
        }
        if chunked && contentLength != nil { throw bad("both Content-Length and Transfer-Encoding") }
        let framing: RequestBodyFraming = chunked ? .chunked : (contentLength.map { .length($0) } ?? .none)
        return ClientRequestHead(
            method: method, uri: uri, minorVersion: minor, fields: fields, framing: framing,
            isKeepAlive: !close && (minor == 1 || keepAliveToken), isUpgrade: upgradeToken && upgradeField)
    }
}
