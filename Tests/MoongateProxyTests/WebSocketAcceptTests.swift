@testable import MoongateProxy
import Testing

/// `Sec-WebSocket-Accept` and the SHA-1 under it, against published vectors.
@Suite("WebSocket accept")
struct WebSocketAcceptTests {
    @Test("RFC 6455's example key")
    func rfcExample() {
        #expect(WebSocketAccept.value(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("SHA-1 of RFC 3174's test strings, across block boundaries")
    func sha1Vectors() {
        func hex(_ text: String) -> String {
            WebSocketAccept.sha1(Array(text.utf8)).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
        #expect(hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") == "84983e441c3bd26ebaae4aa1f95129e5e54670f1")
    }
}
