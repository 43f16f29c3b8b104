import MoongatePolicy
@testable import MoongateProxy
import NIOHPACK
import Testing

/// Moongate's own HTTP/2 request checks (hardening.md §B), without a channel: what passes, what is
/// malformed, and what a trailer block keeps.
@Suite("HTTP/2 request validator")
struct HTTP2RequestValidatorTests {
    private static let base = [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/p")]

    private func check(_ fields: [(String, String)]) -> String? {
        do throws(HTTP2RequestValidator.Malformed) {
            _ = try HTTP2RequestValidator.validate(HPACKHeaders(fields))
            return nil
        } catch {
            return error.reason
        }
    }

    @Test("a plain request passes with its fields, te trailers and a matching host")
    func wellFormed() throws {
        let head = try HTTP2RequestValidator.validate(
            HPACKHeaders(Self.base + [("te", "trailers"), ("host", "A.TEST"), ("content-length", "5"), ("x-a", "1")]))
        #expect(head.method == "GET" && head.path == "/p" && head.authority == "a.test")
        #expect(head.contentLength == 5)
        #expect(head.fields.map(\.name) == ["te", "host", "content-length", "x-a"])
    }

    @Test("host stands in for a missing :authority")
    func hostAsAuthority() throws {
        let head = try HTTP2RequestValidator.validate(
            HPACKHeaders([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "b.test:8080")]))
        #expect(head.authority == "b.test:8080")
    }

    @Test(
        "malformed requests are refused",
        arguments: [
            [("transfer-encoding", "chunked")], [("connection", "close")], [("keep-alive", "1")], [("proxy-connection", "x")],
            [("upgrade", "h2c")], [("te", "gzip")], [("X-Upper", "1")], [("x:a", "1")], [("x a", "1")], [("", "1")],
            [("x-a", "a\r\nb")], [("x-a", "a\u{0}b")], [("x-a", " lead")], [("x-a", "trail ")], [(":path", "/2")],
            [(":evil", "1")], [(":status", "200")], [("host", "other.test")], [("content-length", "+5")],
            [("content-length", "5"), ("content-length", "6")], [(":protocol", "websocket")],
        ] as [[(String, String)]])
    func malformed(extra: [(String, String)]) {
        #expect(check(Self.base + extra) != nil)
    }

    @Test(
        "pseudo-header values are checked",
        arguments: [
            [(":method", "GET /x"), (":scheme", "http"), (":authority", "a.test"), (":path", "/")],
            [(":method", "GET"), (":scheme", "ht tp"), (":authority", "a.test"), (":path", "/")],
            [(":method", "GET"), (":scheme", "http"), (":authority", "u@a.test"), (":path", "/")],
            [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "/a b")],
            [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "rel")],
            [(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "")],
            [(":method", "GET"), (":authority", "a.test"), (":path", "/")],
            [(":scheme", "http"), (":authority", "a.test"), (":path", "/")],
            [(":method", "GET"), ("x-a", "1"), (":scheme", "http"), (":authority", "a.test"), (":path", "/")],
        ] as [[(String, String)]])
    func pseudoHeaders(fields: [(String, String)]) {
        #expect(check(fields) != nil)
    }

    @Test("classic CONNECT needs no :scheme or :path; OPTIONS may ask for *")
    func connectAndAsterisk() {
        #expect(check([(":method", "CONNECT"), (":authority", "a.test:443")]) == nil)
        #expect(check([(":method", "OPTIONS"), (":scheme", "http"), (":authority", "a.test"), (":path", "*")]) == nil)
        #expect(check([(":method", "GET"), (":scheme", "http"), (":authority", "a.test"), (":path", "*")]) != nil)
    }

    @Test("extended CONNECT passes only where the listener advertised it")
    func extendedConnect() throws {
        let fields = HPACKHeaders([
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":authority", "a.test"), (":path", "/chat"),
        ])
        #expect(try HTTP2RequestValidator.validate(fields).protocolName == "websocket")
        #expect(throws: HTTP2RequestValidator.Malformed.self) { try HTTP2RequestValidator.validate(fields, extendedConnect: false) }
    }

    @Test("trailers keep ordinary fields and drop framing, routing and credentials")
    func trailers() throws {
        let kept = try HTTP2RequestValidator.validateTrailers(
            HPACKHeaders([("x-sum", "1"), ("content-length", "3"), ("host", "x"), ("authorization", "y")]))
        #expect(kept == [HeaderField("x-sum", "1")])
        #expect(throws: HTTP2RequestValidator.Malformed.self) {
            try HTTP2RequestValidator.validateTrailers(HPACKHeaders([(":path", "/")]))
        }
    }
}
