import MoongatePolicy
import NIOCore
import Testing

@testable import MoongateProxy

/// The upstream response parser on its own: framing, strictness (hardening.md §F 5–7: response
/// splitting shapes are refused), reads split anywhere, and the floor applied to copied field lines.
@Suite("Upstream response parser")
struct UpstreamResponseParserTests {
    /// What the parser delivered: heads' codes, the body bytes, and whether the message ended.
    struct Delivery: Equatable {
        var codes: [Int] = []
        var body = ""
        var ends = 0
        var leftover = ""
        var trailers: [String] = []
    }

    private func parse(
        _ text: String, expecting expectation: UpstreamResponseParser.Expectation = .response(head: false),
        splitEvery step: Int? = nil, inputEnds: Bool = false, maxHeadBytes: Int = 60 * 1024, maxFields: Int = 100
    ) throws(UpstreamProtocolError) -> Delivery {
        let parser = UpstreamResponseParser(maxHeadBytes: maxHeadBytes, maxFields: maxFields)
        parser.expect(expectation)
        var delivery = Delivery()
        let bytes = Array(text.utf8)
        let size = step ?? max(bytes.count, 1)
        var offset = 0
        while offset < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[offset..<min(offset + size, bytes.count)])
            offset += size
            let rest = try parser.feed(&buffer) { part in
                switch part {
                case .head(let head): delivery.codes.append(head.code)
                case .body(let body): delivery.body += String(buffer: body)
                case .trailers(let fields): delivery.trailers += fields.map { "\($0.name): \($0.value)" }
                case .end: delivery.ends += 1
                }
            }
            if let rest { delivery.leftover += String(buffer: rest) }
        }
        if inputEnds {
            try parser.inputEnded { part in
                if case .end = part { delivery.ends += 1 }
            }
        }
        return delivery
    }

    private func refused(_ text: String, _ reason: String, expecting: UpstreamResponseParser.Expectation = .response(head: false)) {
        #expect(throws: UpstreamProtocolError(reason: reason)) { try parse(text, expecting: expecting) }
    }

    @Test("Content-Length, chunked and close-delimited bodies, at every read split")
    func framing() throws {
        let cases: [(String, String, Bool)] = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello", "hello", false),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Sum: 1\r\n\r\n", "hello!", false),
            ("HTTP/1.0 200 OK\r\n\r\nuntil the end", "until the end", true),
            ("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "", false),
        ]
        for (text, body, ends) in cases {
            for step in [1, 2, 3, 7, 1000] {
                let d = try parse(text, splitEvery: step, inputEnds: ends)
                let trailers = text.contains("X-Sum") ? ["X-Sum: 1"] : []
                #expect(d == Delivery(codes: [200], body: body, ends: 1, trailers: trailers), "step \(step): \(text.debugDescription)")
            }
        }
    }

    @Test("Trailer fields of a chunked response are delivered before its end, checked, and not carried into the next response")
    func trailers() throws {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\ngrpc-status: 0\r\nGrpc-Message:  fine \r\n\r\n"
        for step in [1, 4, 1000] {
            #expect(try parse(text, splitEvery: step) == Delivery(codes: [200], body: "ok", ends: 1, trailers: ["grpc-status: 0", "Grpc-Message: fine"]))
        }
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad name: 1\r\n\r\n", "invalid field name")
    }

    @Test("1xx heads come before the final one; HEAD, 204 and 304 have no body")
    func noBodies() throws {
        #expect(try parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            == Delivery(codes: [100, 103, 200], body: "ok", ends: 1))
        #expect(try parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", expecting: .response(head: true))
            == Delivery(codes: [200], ends: 1))
        #expect(try parse("HTTP/1.1 204 No Content\r\n\r\n") == Delivery(codes: [204], ends: 1))
        #expect(try parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n") == Delivery(codes: [304], ends: 1))
    }

    @Test("a 101 to an upgrade and a 2xx to a CONNECT end HTTP; what follows is raw")
    func tunnels() throws {
        #expect(try parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframe", expecting: .upgrade)
            == Delivery(codes: [101], ends: 1, leftover: "frame"))
        #expect(try parse("HTTP/1.1 200 Connection established\r\nContent-Length: 10\r\n\r\nserver-first", expecting: .connect)
            == Delivery(codes: [200], ends: 1, leftover: "server-first"))
        // A refusal from the parent proxy is an ordinary response with its body.
        #expect(try parse("HTTP/1.1 407 Auth\r\nContent-Length: 4\r\n\r\nnope", expecting: .connect)
            == Delivery(codes: [407], body: "nope", ends: 1))
        // An upgrade the origin declines is an ordinary response (not a tunnel, §F.9).
        #expect(try parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", expecting: .upgrade)
            == Delivery(codes: [200], body: "no", ends: 1))
        refused("HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 to a request that asked for no upgrade")
    }

    @Test("response-splitting shapes and malformed heads are refused (§F.5–7)")
    func strictness() {
        refused("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding")
        refused("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "conflicting Content-Length fields")
        refused("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", "bad Content-Length")
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding")
        refused("HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 0\r\n\r\n", "bare CR")
        refused("HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 0\r\n\r\n", "control character in a field value")
        refused("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", "obs-fold or empty field name")
        refused("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "invalid field name")
        refused("HTTP/1.1 200 OK\r\nX-A: a\u{01}b\r\n\r\n", "control character in a field value")
        refused("HTTP/2 200 OK\r\n\r\n", "bad status line")
        refused("HTTP/1.1 2000 OK\r\n\r\n", "bad status line")
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size")
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "chunk data longer than its size")
        refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", "chunk size too large")
        // A complete response followed by more bytes: nothing is due, so the connection is refused.
        refused("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\n\r\n", "bytes received when no response was due")
    }

    @Test("bytes read with a response are never the next request's response, even when it is sent at once")
    func noPresentResponses() {
        let parser = UpstreamResponseParser(maxHeadBytes: 4096, maxFields: 100)
        parser.expect(.response(head: false))
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
            + "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
        var ends = 0
        #expect(throws: UpstreamProtocolError(reason: "bytes received when no response was due")) {
            _ = try parser.feed(&buffer) { part in
                // What a pipelined client causes: the next request goes out from `.end`.
                if case .end = part {
                    ends += 1
                    parser.expect(.response(head: false))
                }
            }
        }
        #expect(ends == 1)
    }

    @Test("head size and field count limits, and truncated responses")
    func limits() {
        let big = "HTTP/1.1 200 OK\r\nX-Big: \(String(repeating: "a", count: 2000))\r\n\r\n"
        #expect(throws: UpstreamProtocolError(reason: "head too large")) { try parse(big, splitEvery: 100, maxHeadBytes: 1024) }
        #expect(throws: UpstreamProtocolError(reason: "head too large")) { try parse(big, maxHeadBytes: 1024) }
        let many = "HTTP/1.1 200 OK\r\n" + (0..<5).map { "X-\($0): 1\r\n" }.joined() + "\r\n"
        #expect(throws: UpstreamProtocolError(reason: "too many fields")) { try parse(many, maxFields: 4) }
        #expect(throws: UpstreamProtocolError(reason: "closed mid-response")) {
            try parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", inputEnds: true)
        }
        #expect(throws: UpstreamProtocolError(reason: "closed before answering")) { try parse("", inputEnds: true) }
    }

    @Test("keep-alive follows the version and Connection")
    func keepAlive() throws {
        func head(_ text: String) throws -> UpstreamResponseHead? {
            let parser = UpstreamResponseParser(maxHeadBytes: 4096, maxFields: 100)
            parser.expect(.response(head: false))
            var buffer = ByteBuffer(string: text)
            var found: UpstreamResponseHead?
            _ = try parser.feed(&buffer) { if case .head(let h) = $0 { found = h } }
            return found
        }
        #expect(try head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?.isKeepAlive == true)
        #expect(try head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?.isKeepAlive == false)
        #expect(try head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")?.isKeepAlive == false)
        #expect(try head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")?.isKeepAlive == true)
        #expect(try head("HTTP/1.1 200 OK\r\n\r\n")?.isKeepAlive == false)  // close-delimited
    }

    @Test("copied field lines pass the floor: hop-by-hop and Connection-named fields stay behind")
    func floor() throws {
        let parser = UpstreamResponseParser(maxHeadBytes: 4096, maxFields: 100)
        parser.expect(.response(head: false))
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive, X-Secret\r\nx-secret: 1\r\n"
            + "Keep-Alive: timeout=5\r\nContent-Length: 0\r\nProxy-Authenticate: Basic\r\nX-Kept:  v a l  \r\n\r\n")
        var found: UpstreamResponseHead?
        _ = try parser.feed(&buffer) { if case .head(let h) = $0 { found = h } }
        let head = try #require(found)
        var out = ByteBuffer()
        head.writeFields(into: &out, dropContentLength: false)
        #expect(String(buffer: out) == "Server: s\r\nContent-Length: 0\r\nX-Kept: v a l\r\n")
        out.clear()
        head.writeFields(into: &out, dropContentLength: true)
        #expect(String(buffer: out) == "Server: s\r\nX-Kept: v a l\r\n")
        #expect(head.fields.map(\.name) == ["Server", "Connection", "x-secret", "Keep-Alive", "Content-Length", "Proxy-Authenticate", "X-Kept"])
        #expect(head.reason == "OK")
    }
}
