import MoongatePolicy
import NIOCore
import ParserFuzzing

@testable import MoongateProxy

/// The invariants `ClientRequestParser` must keep on any input: the same result whole, in pieces
/// and byte by byte; no accepted head that is ambiguous (``RawHead``), over a limit, or reported
/// differently from its bytes; bodies exactly as long as their framing says (chunked bodies checked
/// against ``ReferenceChunked``); after a CONNECT or upgrade, the rest handed back untouched.
enum ClientRequestOracle {
    /// The parser's limits, chosen by the flags byte (small ones make the limits reachable).
    struct Limits {
        var head: Int, fields: Int, requestLine: Int, fieldLine: Int
        static let profiles = [
            Limits(head: 60 * 1024, fields: 100, requestLine: 8 * 1024, fieldLine: 8 * 1024),
            Limits(head: 256, fields: 8, requestLine: 64, fieldLine: 64),
            Limits(head: 64, fields: 3, requestLine: 32, fieldLine: 24),
            Limits(head: 1024, fields: 20, requestLine: 200, fieldLine: 100),
        ]
    }

    /// One request as delivered.
    struct Message: Equatable {
        var method: String
        var uri: String
        var minorVersion: Int
        var fields: [HeaderField]
        var framing: RequestBodyFraming
        var isKeepAlive: Bool
        var isUpgrade: Bool
        var body: [UInt8] = []
        var ended = false
    }

    /// Everything one way of feeding gave.
    struct Transcript: Equatable {
        var messages: [Message] = []
        var raw: [UInt8] = []
        var refusal: ClientRequestError?
        /// Offsets in the message where each head and each request ended (exact when fed byte by byte).
        var headEnds: [Int] = []
        var messageEnds: [Int] = []

        /// Whether a request is refused may not depend on the split; which refusal may (a long
        /// request line that is also malformed is a 414 or a 400 depending on how much was read).
        static func == (a: Transcript, b: Transcript) -> Bool {
            a.messages == b.messages && a.raw == b.raw && (a.refusal == nil) == (b.refusal == nil)
        }
    }

    static func check(_ input: FuzzInput) {
        let limits = Limits.profiles[Int(input.flags & 3)]
        let whole = run(input, .whole, limits)
        for feeding in [FuzzInput.Feeding.pieces, .bytes] {
            let other = run(input, feeding, limits)
            invariant(other == whole, "fed \(feeding): \(other), whole: \(whole)", input: input)
        }
        verify(run(input, .bytes, limits), input, limits)
    }

    static func run(_ input: FuzzInput, _ feeding: FuzzInput.Feeding, _ limits: Limits) -> Transcript {
        let parser = ClientRequestParser(
            maxHeadBytes: limits.head, maxFields: limits.fields, maxRequestLine: limits.requestLine, maxFieldLine: limits.fieldLine)
        var transcript = Transcript()
        var consumed = 0
        for read in input.reads(feeding) {
            var buffer = ByteBuffer(bytes: read)
            consumed += read.count
            do {
                let rest = try parser.feed(&buffer) { part in
                    switch part {
                    case .head(let head):
                        transcript.messages.append(Message(
                            method: head.method, uri: head.uri, minorVersion: head.minorVersion, fields: head.fields,
                            framing: head.framing, isKeepAlive: head.isKeepAlive, isUpgrade: head.isUpgrade))
                        transcript.headEnds.append(consumed)
                    case .body(let body):
                        transcript.messages[transcript.messages.count - 1].body += body.readableBytesView
                    case .end:
                        transcript.messages[transcript.messages.count - 1].ended = true
                        transcript.messageEnds.append(consumed)
                    }
                }
                if let rest { transcript.raw += rest.readableBytesView }
            } catch {
                transcript.refusal = error
                break
            }
        }
        return transcript
    }

    /// Re-reads every accepted request from the bytes (the transcript of a byte-by-byte feed, whose
    /// offsets are exact).
    static func verify(_ t: Transcript, _ input: FuzzInput, _ limits: Limits) {
        let bytes = input.message
        if let refusal = t.refusal {
            invariant([400, 414, 431, 505].contains(refusal.status), "refused with \(refusal.status)", input: input)
        }
        for (index, message) in t.messages.enumerated() {
            var head = bytes[(index == 0 ? 0 : t.messageEnds[index - 1])..<t.headEnds[index]]
            while head.starts(with: [13, 10]) { head = head.dropFirst(2) }
            let raw: RawHead
            let framing: RawHead.Framing
            do {
                raw = try RawHead(head)
                framing = try raw.framing()
            } catch {
                invariant(false, "request \(index) accepted with \(error)", input: input)
                return
            }
            invariant(head.count <= limits.head, "head of \(head.count) bytes accepted", input: input)
            invariant(raw.fields.count <= limits.fields, "\(raw.fields.count) fields accepted", input: input)
            invariant(raw.longestFieldLine <= limits.fieldLine, "a field line over its limit accepted", input: input)
            invariant(raw.startLine.count <= limits.requestLine, "a request line over its limit accepted", input: input)
            let parts = raw.startLine.split(separator: 32, omittingEmptySubsequences: false)
            invariant(parts.count == 3, "request line of \(parts.count) parts", input: input)
            invariant(!parts[0].isEmpty && parts[0].allSatisfy(RawHead.isTokenByte), "method not a token", input: input)
            invariant(!parts[1].isEmpty && parts[1].allSatisfy { $0 > 32 && $0 < 127 }, "bad request-target", input: input)
            let version = String(decoding: parts[2], as: UTF8.self)
            invariant(version == "HTTP/1.1" || version == "HTTP/1.0", "version \(version) accepted", input: input)
            invariant(
                message.method == String(decoding: parts[0], as: UTF8.self) && message.uri == String(decoding: parts[1], as: UTF8.self)
                    && message.minorVersion == (version == "HTTP/1.1" ? 1 : 0), "request line reported wrongly", input: input)
            let fields = raw.fields.map { HeaderField(String(decoding: $0.name, as: UTF8.self), String(decoding: $0.value, as: UTF8.self)) }
            invariant(message.fields == fields, "fields reported wrongly", input: input)
            let expected: RequestBodyFraming = switch framing {
            case .none: .none
            case .length(let n): .length(n)
            case .chunked: .chunked
            }
            invariant(message.framing == expected, "framing \(message.framing), the fields say \(expected)", input: input)
            let close = raw.lists("connection", "close")
            let keepAlive = !close && (message.minorVersion == 1 || raw.lists("connection", "keep-alive"))
            invariant(message.isKeepAlive == keepAlive, "keep-alive reported wrongly", input: input)
            let upgrade = raw.lists("connection", "upgrade") && raw.has("upgrade")
            invariant(message.isUpgrade == upgrade, "upgrade reported wrongly", input: input)
            verifyBody(message, bodyStart: t.headEnds[index], end: message.ended ? t.messageEnds[index] : nil, refused: t.refusal != nil, input, limits)
        }
        if let last = t.messages.last, last.ended, last.method == "CONNECT" || last.isUpgrade {
            invariant(t.raw == Array(bytes[t.messageEnds[t.messages.count - 1]...]), "bytes after HTTP ended changed", input: input)
        } else {
            invariant(t.raw.isEmpty, "raw bytes while HTTP goes on", input: input)
        }
    }

    private static func verifyBody(_ message: Message, bodyStart: Int, end: Int?, refused: Bool, _ input: FuzzInput, _ limits: Limits) {
        let bytes = input.message
        let sent = bytes[bodyStart..<(end ?? bytes.count)]
        switch message.framing {
        case .none:
            invariant(message.ended && end == bodyStart && message.body.isEmpty, "a body without framing", input: input)
        case .length(let n):
            if message.ended {
                invariant(sent.count == n && message.body == Array(sent), "Content-Length \(n), body of \(message.body.count)", input: input)
            } else {
                invariant(sent.count < n && message.body == Array(sent), "unfinished body reported wrongly", input: input)
            }
        case .chunked:
            let reference = ReferenceChunked(strict: true, maxTrailerBytes: limits.head).decode(sent)
            if message.ended {
                invariant(reference == .complete(data: message.body, consumed: sent.count), "chunked body: reference says \(reference)", input: input)
            } else if refused {
                invariant(reference == .refused(data: message.body), "refused chunked body: reference says \(reference)", input: input)
            } else {
                invariant(reference == .incomplete(data: message.body), "unfinished chunked body: reference says \(reference)", input: input)
            }
        }
    }
}
