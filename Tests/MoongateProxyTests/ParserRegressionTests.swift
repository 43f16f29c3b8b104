import NIOCore
import Testing

@testable import MoongateProxy

/// Inputs the parser fuzzers (scripts/fuzz-parsers) found to break an invariant, each kept as a named
/// test after its fix. Every test feeds its bytes at every split the finding depended on.
@Suite("Parser regressions found by fuzzing")
struct ParserRegressionTests {
    @Test("Empty lines before a request line are skipped however the reads cut them (a CR alone in one read)")
    func emptyLinesAcrossReads() {
        let bytes = Array("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        // Found as: "\r" | "\n\r\nGET …" gave a 400 (the second empty line was taken for the head's end).
        for cuts in Self.splits(bytes) {
            #expect(Self.clientResult(bytes, cuts: cuts) == "[GET /][end]", "cut at \(cuts)")
        }
        // A CR that is not the start of an empty line is refused, wherever the read ends.
        let bareCR = Array("\r\n\rGET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        for cuts in Self.splits(bareCR) {
            #expect(Self.clientResult(bareCR, cuts: cuts) == "[400 bare CR]", "cut at \(cuts)")
        }
    }

    /// What a client request parser made of `bytes` cut at `cuts`: heads, body, or the refusal.
    static func clientResult(_ bytes: [UInt8], cuts: [Int], parser: ClientRequestParser = ClientRequestParser(maxHeadBytes: 1024, maxFields: 10))
        -> String
    {
        var result = ""
        let bounds = [0] + cuts + [bytes.count]
        do {
            for (start, end) in zip(bounds, bounds.dropFirst()) {
                var buffer = ByteBuffer(bytes: bytes[start..<end])
                _ = try parser.feed(&buffer) { part in
                    switch part {
                    case .head(let head): result += "[\(head.method) \(head.uri)]"
                    case .body(let body): result += String(buffer: body)
                    case .end: result += "[end]"
                    }
                }
            }
        } catch {
            result += "[\(error.status) \(error.reason)]"
        }
        return result
    }

    /// Every way of cutting `bytes` in two, and byte by byte.
    static func splits(_ bytes: [UInt8]) -> [[Int]] {
        (0...bytes.count).map { [$0] } + [Array(1..<bytes.count)]
    }
}
