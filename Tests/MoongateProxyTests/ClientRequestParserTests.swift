import MoongatePolicy
import NIOCore
import Testing

@testable import MoongateProxy

/// The client request parser on its own: framing and pipelining at every read split, keep-alive
/// and upgrade semantics, the raw bytes after a CONNECT, and the refusals of hardening.md §A with
/// their status (400, 431 for the limits, 505 for other versions).
@Suite("Client request parser")
struct ClientRequestParserTests {
    /// What the parser delivered, in order.
    struct Delivery: Equatable {
        var heads: [String] = []
        var body = ""
        var ends = 0
        var raw = ""
    }

    private func parse(_ text: String, splitEvery step: Int? = nil, maxHeadBytes: Int = 60 * 1024, maxFields: Int = 100)
        throws(ClientRequestError) -> (Delivery, [ClientRequestHead])
    {
        let parser = ClientRequestParser(maxHeadBytes: maxHeadBytes, maxFields: maxFields)
        var delivery = Delivery()
        var heads: [ClientRequestHead] = []
        let bytes = Array(text.utf8)
        let size = step ?? max(bytes.count, 1)
        var offset = 0
        while offset < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[offset..<min(offset + size, bytes.count)])
            offset += size
            let rest = try parser.feed(&buffer) { part in
                switch part {
                case .head(let head):
                    delivery.heads.append("\(head.method) \(head.uri)")
                    heads.append(head)
                case .body(let body): delivery.body += String(buffer: body)
                case .end: delivery.ends += 1
                }
            }
            if let rest { delivery.raw += String(buffer: rest) }
        }
        return (delivery, heads)
    }

    private func refused(_ text: String, status: Int = 400, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: ClientRequestError(status: status, reason: reason), sourceLocation: sourceLocation) {
            try parse(text)
        }
    }

    @Test("Content-Length and chunked bodies and pipelined requests, at every read split")
    func framing() throws {
        let text = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            + "POST /b?q=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"
            + "\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        for step in [nil, 1, 2, 3, 7, 16] as [Int?] {
            let (delivery, heads) = try parse(text, splitEvery: step)
            #expect(delivery.heads == ["POST /a", "POST /b?q=1", "GET /c"], "split \(String(describing: step))")
            #expect(delivery.body == "hello world", "split \(String(describing: step))")
            #expect(delivery.ends == 3)
            #expect(heads.map(\.framing) == [.length(5), .chunked, .none])
        }
    }

    @Test("Fields keep their spelling; keep-alive follows version and Connection")
    func fieldsAndKeepAlive() throws {
        let (_, heads) = try parse(
            "GET / HTTP/1.1\r\nHost:  example.com \r\nX-Mixed-Case: a b\r\n\r\n"
                + "GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n")
        #expect(heads[0].fields == [HeaderField("Host", "example.com"), HeaderField("X-Mixed-Case", "a b")])
        #expect(heads[0].isKeepAlive && heads[0].version == "HTTP/1.1")
        #expect(!heads[1].isKeepAlive)
        let (_, old) = try parse("GET / HTTP/1.0\r\n\r\n")
        #expect(!old[0].isKeepAlive && old[0].version == "HTTP/1.0")
        let (_, kept) = try parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        #expect(kept[0].isKeepAlive)
    }

    @Test("After a CONNECT head, and after an upgrade request, the rest is raw bytes")
    func httpEnds() throws {
        let (connect, _) = try parse("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        #expect(connect.heads == ["CONNECT example.com:443"] && connect.ends == 1)
        #expect(connect.raw == "GET / HTTP/1.1\r\n\r\n")
        let (upgrade, heads) = try parse(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{1}\u{2}frame", splitEvery: 5)
        #expect(heads[0].isUpgrade && upgrade.ends == 1)
        #expect(upgrade.raw == "\u{1}\u{2}frame")
        let (_, plain) = try parse("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        #expect(!plain[0].isUpgrade)  // no Connection: upgrade
    }

    @Test("Smuggling shapes of hardening.md §A are refused with 400")
    func smuggling() {
        let post = "POST / HTTP/1.1\r\nHost: x\r\n"
        refused(post + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", "both Content-Length and Transfer-Encoding")
        refused(post + "Content-Length: 3\r\nContent-Length: 5\r\n\r\nhello", "conflicting Content-Length fields")
        for value in ["+5", "-5", "0x5", "5, 6", "", "5 5", String(repeating: "9", count: 40)] {
            refused(post + "Content-Length: \(value)\r\n\r\nhello", "bad Content-Length")
        }
        for value in ["xchunked", "chunked, identity", "identity", "\"chunked\""] {
            refused(post + "Transfer-Encoding: \(value)\r\n\r\n0\r\n\r\n", "unsupported Transfer-Encoding")
        }
        refused(post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "unsupported Transfer-Encoding")
        refused(post + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", "invalid field name")
        refused(post + "Transfer-Encoding:\u{B}chunked\r\n\r\n0\r\n\r\n", "control character in a field value")
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", "obs-fold or empty field name")
        refused("GET / HTTP/1.1\nHost: x\n\n", "bare LF")
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "bare CR")
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n", "control character in a field value")
        refused("GET / HTTP/1.1\r\nHost: x\r\nX@A: 1\r\n\r\n", "invalid field name")
        refused("GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n", "field line without a name and colon")
        refused("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "bad request line")
        refused("GET /a\u{0}b HTTP/1.1\r\nHost: x\r\n\r\n", "bad request-target")
        refused("G@T / HTTP/1.1\r\nHost: x\r\n\r\n", "bad request line")
        refused("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", "bad request line")
        refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n", status: 505, "HTTP version not supported")
    }

    @Test("Chunk lines: overflow, signs, prefixes, whitespace, bare LF, missing CRLF after data")
    func chunkLines() {
        let chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        refused(chunked + "10000000000000005\r\nhello\r\n0\r\n\r\n", "chunk size too large")
        refused(chunked + "-5\r\nhello\r\n0\r\n\r\n", "bad chunk size")
        refused(chunked + "0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size")
        refused(chunked + " 5\r\nhello\r\n0\r\n\r\n", "bad chunk size")
        refused(chunked + "5 \r\nhello\r\n0\r\n\r\n", "whitespace after a chunk size")
        refused(chunked + "5;a\nxx\r\nhello\r\n0\r\n\r\n", "bare LF")
        refused(chunked + "5\r\nhelloXX0\r\n\r\n", "chunk data longer than its size")
        refused(chunked + String(repeating: "0", count: 5000) + "5\r\nhello\r\n0\r\n\r\n", "line too long")
    }

    @Test("Head size and field count limits answer 431, also when the head comes in pieces")
    func limits() {
        #expect(throws: ClientRequestError(status: 431, reason: "too many header fields")) {
            try parse("GET / HTTP/1.1\r\n" + (0..<5).map { "X-\($0): v\r\n" }.joined() + "\r\n", maxFields: 4)
        }
        #expect(throws: ClientRequestError(status: 431, reason: "request head too large")) {
            try parse("GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 2000) + "\r\n\r\n", maxHeadBytes: 1024)
        }
        #expect(throws: ClientRequestError(status: 431, reason: "request head too large")) {
            try parse("GET / HTTP/1.1\r\nX-Big: " + String(repeating: "a", count: 2000), splitEvery: 100, maxHeadBytes: 1024)
        }
    }

    @Test("A request line over its limit answers 414, a field line over its own 431, whole or in pieces")
    func lineLimits() {
        let parser = { ClientRequestParser(maxHeadBytes: 60 * 1024, maxFields: 100, maxRequestLine: 100, maxFieldLine: 50) }
        let longLine = "GET /" + String(repeating: "a", count: 200) + " HTTP/1.1\r\nHost: x\r\n\r\n"
        let longField = "GET / HTTP/1.1\r\nX-A: " + String(repeating: "b", count: 60) + "\r\n\r\n"
        for step in [nil, 7] as [Int?] {
            #expect(throws: ClientRequestError(status: 414, reason: "request line too long")) {
                try feed(parser(), longLine, splitEvery: step)
            }
            #expect(throws: ClientRequestError(status: 431, reason: "header field too large")) {
                try feed(parser(), longField, splitEvery: step)
            }
        }
        // A request line with no end in sight is refused once it passes the limit.
        #expect(throws: ClientRequestError(status: 414, reason: "request line too long")) {
            try feed(parser(), "GET /" + String(repeating: "a", count: 500), splitEvery: 10)
        }
        // Over the head limit because of the request line alone: still 414.
        #expect(throws: ClientRequestError(status: 414, reason: "request line too long")) {
            try feed(ClientRequestParser(maxHeadBytes: 150, maxFields: 100, maxRequestLine: 100, maxFieldLine: 50), longLine)
        }
    }

    private func feed(_ parser: ClientRequestParser, _ text: String, splitEvery step: Int? = nil) throws(ClientRequestError) {
        let bytes = Array(text.utf8)
        let size = step ?? bytes.count
        var offset = 0
        while offset < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[offset..<min(offset + size, bytes.count)])
            offset += size
            _ = try parser.feed(&buffer) { _ in }
        }
    }

    @Test("Random bytes after valid and invalid starts: an answer or a refusal, never a crash (bounded)")
    func randomInput() {
        var rng = SplitMix64(seed: 0x6d6f_6f6e_6761_7465)
        let alphabet = Array("GET /HTTP1.0:-;xX \r\n\r\n\t\u{0}\u{7f}0aF".utf8) + [0x80, 0xff]
        let starts = ["", "GET / HTTP/1.1\r\n", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                      "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "CONNECT a:1 HTTP/1.1\r\n\r\n"]
        for round in 0..<4_000 {
            var bytes = Array(starts[round % starts.count].utf8)
            for _ in 0..<Int(rng.next() % 120) { bytes.append(alphabet[Int(rng.next() % UInt64(alphabet.count))]) }
            let parser = ClientRequestParser(maxHeadBytes: 256, maxFields: 8, maxRequestLine: 64, maxFieldLine: 64)
            var offset = 0
            while offset < bytes.count {
                let size = 1 + Int(rng.next() % 16)
                var buffer = ByteBuffer(bytes: bytes[offset..<min(offset + size, bytes.count)])
                offset += size
                do {
                    _ = try parser.feed(&buffer) { _ in }
                } catch {
                    #expect([400, 414, 431, 505].contains(error.status))
                    break
                }
            }
        }
    }

    @Test("After a refusal the parser takes nothing more")
    func failedStaysFailed() throws {
        let parser = ClientRequestParser(maxHeadBytes: 1024, maxFields: 10)
        var bad = ByteBuffer(string: "GET / HTTP/1.1\nHost: x\n\n")
        #expect(throws: ClientRequestError.self) { try parser.feed(&bad) { _ in } }
        var good = ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        var parts = 0
        _ = try parser.feed(&good) { _ in parts += 1 }
        #expect(parts == 0)
    }
}

/// A small deterministic generator (SplitMix64), so a failing input can be replayed.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
