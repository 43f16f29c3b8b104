import MoongatePolicy
import NIOCore
import ParserFuzzing

@testable import MoongateProxy

/// The invariants `UpstreamResponseParser` must keep on any input, for each kind of request it can
/// expect an answer to: the same result whole, in pieces and byte by byte; no accepted head that is
/// ambiguous (``RawHead``) or over a limit; 1xx, HEAD, 204 and 304 without a body; a 101 only
/// after an upgrade; bodies exactly as long as their framing says (chunked ones checked against
/// ``ReferenceChunked``); no byte taken after the response ends; a tunnel's bytes untouched.
enum UpstreamResponseOracle {
    static let expectations: [UpstreamResponseParser.Expectation] = [.response(head: false), .response(head: true), .upgrade, .connect]
    static let limits = [(head: 60 * 1024, fields: 100), (head: 256, fields: 8)]

    struct Head: Equatable {
        var code: Int
        var raw: [UInt8]
        var fields: [HeaderField]
        var framing: UpstreamResponseParser.Framing
        var isKeepAlive: Bool
    }

    struct Transcript: Equatable {
        var heads: [Head] = []
        var body: [UInt8] = []
        /// How many trailer fields were delivered.
        var trailers = 0
        var ended = false
        var raw: [UInt8] = []
        var refusal: UpstreamProtocolError?
        /// What the end of input gave: an end, a refusal, or nothing.
        var atClose = ""
        var headEnds: [Int] = []
        var endOffset: Int?

        /// Whether a response is refused may not depend on the split; which reason is given may.
        static func == (a: Transcript, b: Transcript) -> Bool {
            (a.heads, a.body, a.ended, a.raw, a.refusal == nil, a.atClose) == (b.heads, b.body, b.ended, b.raw, b.refusal == nil, b.atClose)
        }
    }

    static func check(_ input: FuzzInput) {
        let expectation = expectations[Int(input.flags & 3)]
        let limit = limits[Int(input.flags >> 2) & 1]
        let whole = run(input, .whole, expectation, limit)
        for feeding in [FuzzInput.Feeding.pieces, .bytes] {
            let other = run(input, feeding, expectation, limit)
            invariant(other == whole, "fed \(feeding): \(other), whole: \(whole)", input: input)
        }
        verify(run(input, .bytes, expectation, limit), input, expectation, limit)
    }

    static func run(
        _ input: FuzzInput, _ feeding: FuzzInput.Feeding, _ expectation: UpstreamResponseParser.Expectation,
        _ limit: (head: Int, fields: Int)
    ) -> Transcript {
        let parser = UpstreamResponseParser(maxHeadBytes: limit.head, maxFields: limit.fields)
        parser.expect(expectation)
        var t = Transcript()
        var consumed = 0
        let emit = { (part: UpstreamPart) in
            switch part {
            case .head(let head):
                t.heads.append(Head(
                    code: head.code, raw: Array(head.raw.readableBytesView), fields: head.fields, framing: head.framing,
                    isKeepAlive: head.isKeepAlive))
                t.headEnds.append(consumed)
            case .body(let body): t.body += body.readableBytesView
            case .trailers(let fields): t.trailers += fields.count
            case .end:
                t.ended = true
                t.endOffset = consumed
            }
        }
        for read in input.reads(feeding) {
            var buffer = ByteBuffer(bytes: read)
            consumed += read.count
            do {
                if let rest = try parser.feed(&buffer, emit: emit) { t.raw += rest.readableBytesView }
            } catch {
                t.refusal = error
                return t
            }
        }
        do {
            let ended = t.ended
            try parser.inputEnded(emit: emit)
            t.atClose = t.ended != ended ? "end" : ""
        } catch {
            t.atClose = error.reason
        }
        return t
    }

    static func verify(
        _ t: Transcript, _ input: FuzzInput, _ expectation: UpstreamResponseParser.Expectation, _ limit: (head: Int, fields: Int)
    ) {
        let bytes = input.message
        var tunnel = false
        for (index, head) in t.heads.enumerated() {
            let text = bytes[(index == 0 ? 0 : t.headEnds[index - 1])..<t.headEnds[index]]
            invariant(head.raw == Array(text), "head \(index) is not the bytes it came from", input: input)
            let raw: RawHead
            let framing: RawHead.Framing
            do {
                raw = try RawHead(text)
                framing = try raw.framing()
            } catch {
                invariant(false, "head \(index) accepted with \(error)", input: input)
                return
            }
            invariant(text.count <= limit.head && raw.fields.count <= limit.fields, "a head over the limits accepted", input: input)
            let line = raw.startLine
            invariant(line.count >= 12 && line.starts(with: Array("HTTP/1.".utf8)) && (line[line.startIndex + 7] == 48 || line[line.startIndex + 7] == 49)
                && line[line.startIndex + 8] == 32, "bad status line accepted", input: input)
            let digits = line[(line.startIndex + 9)..<(line.startIndex + 12)]
            let code = digits.allSatisfy { $0 >= 48 && $0 <= 57 } ? Int(String(decoding: digits, as: UTF8.self))! : -1
            invariant(code == head.code && (100...599).contains(code), "status \(head.code) reported for \(code)", input: input)
            let reason = line[(line.startIndex + 12)...]
            invariant(reason.isEmpty || (reason.first == 32 && reason.allSatisfy { $0 == 9 || ($0 >= 32 && $0 != 127) }),
                "bad reason phrase accepted", input: input)
            let fields = raw.fields.map { HeaderField(String(decoding: $0.name, as: UTF8.self), String(decoding: $0.value, as: UTF8.self)) }
            invariant(head.fields == fields, "fields reported wrongly", input: input)
            let isFinal = index == t.heads.count - 1
            let informational = code < 200 && code != 101
            invariant(informational || isFinal, "a head after the final one", input: input)
            invariant(code != 101 || expectation == .upgrade, "a 101 accepted without an upgrade", input: input)
            tunnel = (expectation == .upgrade && code == 101) || (expectation == .connect && code / 100 == 2)
            let noBody = informational || expectation == .response(head: true) || code == 204 || code == 304
            let expected: UpstreamResponseParser.Framing = switch framing {
            case _ where noBody: .none
            case .none: .untilClose
            case .length(let n): .length(n)
            case .chunked: .chunked
            }
            invariant(head.framing == expected, "framing \(head.framing), expected \(expected)", input: input)
            let minor = line[line.startIndex + 7] - 48
            let keepAlive = !raw.lists("connection", "close") && (minor == 1 || raw.lists("connection", "keep-alive"))
                && !tunnel && expected != .untilClose
            invariant(head.isKeepAlive == keepAlive, "keep-alive reported wrongly", input: input)
            if isFinal && !informational { verifyBody(t, expected, tunnel: tunnel, input, limit) }
        }
        if t.heads.allSatisfy({ $0.code < 200 && $0.code != 101 }) {
            invariant(t.body.isEmpty && !t.ended, "a body or an end without a final head", input: input)
        }
        if !tunnel { invariant(t.raw.isEmpty, "raw bytes without a tunnel", input: input) }
        if t.ended, !tunnel, let end = t.endOffset, end < bytes.count {
            invariant(t.refusal?.reason == "bytes received when no response was due", "bytes after the response taken", input: input)
        }
    }

    private static func verifyBody(
        _ t: Transcript, _ framing: UpstreamResponseParser.Framing, tunnel: Bool, _ input: FuzzInput, _ limit: (head: Int, fields: Int)
    ) {
        let bytes = input.message
        let start = t.headEnds.last!
        if tunnel {
            invariant(t.ended && t.endOffset == start && t.body.isEmpty, "a tunnel head with a body", input: input)
            invariant(t.raw == Array(bytes[start...]), "tunnel bytes changed", input: input)
            return
        }
        let sent = bytes[start..<(t.endOffset ?? bytes.count)]
        switch framing {
        case .none:
            invariant(t.ended && t.endOffset == start && t.body.isEmpty, "a body where none may be", input: input)
        case .length(let n):
            invariant(t.body == Array(sent) && (t.ended ? sent.count == n : sent.count < n), "Content-Length \(n), body \(t.body.count)", input: input)
            if !t.ended && t.refusal == nil { invariant(t.atClose == "closed mid-response", "a cut body not refused", input: input) }
        case .untilClose:
            invariant(t.body == Array(sent) && t.endOffset == bytes.count && t.atClose == "end", "close-delimited body reported wrongly", input: input)
        case .chunked:
            let reference = ReferenceChunked(strict: false, maxTrailerBytes: limit.head).decode(sent)
            if t.ended {
                invariant(reference == .complete(data: t.body, consumed: sent.count), "chunked body: reference says \(reference)", input: input)
            } else if t.refusal != nil {
                invariant(reference == .refused(data: t.body), "refused chunked body: reference says \(reference)", input: input)
            } else {
                invariant(reference == .incomplete(data: t.body) && t.atClose == "closed mid-response",
                    "unfinished chunked body: reference says \(reference)", input: input)
            }
        }
    }
}
