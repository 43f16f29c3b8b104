import MoongatePolicy
import Testing

/// The byte-level rules the hot path relies on: case-insensitive names, the hop-by-hop set, and
/// authority normalisation (its one-pass fast path must agree with the general one).
@Suite("Header and authority rules")
struct HeaderRulesTests {
    @Test("every hop-by-hop name is recognised in any case, and nothing else is")
    func hopByHop() {
        for name in SanitizationFloor.hopByHop {
            #expect(SanitizationFloor.isHopByHop(name))
            #expect(SanitizationFloor.isHopByHop(name.uppercased()))
        }
        for name in ["host", "content-length", "x-connection", "upgrade-insecure-requests", "tE ", "trailers", "keep_alive"] {
            #expect(!SanitizationFloor.isHopByHop(name), "\(name)")
        }
    }

    @Test("case-insensitive comparison folds ASCII letters only")
    func caseFolding() {
        #expect("Content-Length".asciiCaseInsensitiveEquals("content-length"))
        #expect(!"content-length".asciiCaseInsensitiveEquals("content_length"))
        #expect(!"a@".asciiCaseInsensitiveEquals("a`"))  // '@' | 0x20 == '`', not letters
        #expect(!"abc".asciiCaseInsensitiveEquals("abcd"))
        #expect("Ünï".asciiCaseInsensitiveEquals("Ünï"))
    }

    @Test("the floor strips hop-by-hop headers and what Connection names")
    func floorStrip() {
        var headers = [
            HeaderField("Host", "a"), HeaderField("Connection", "keep-alive, X-Secret"), HeaderField("x-secret", "1"),
            HeaderField("Keep-Alive", "timeout=5"), HeaderField("TE", "trailers"), HeaderField("Accept", "*/*"),
        ]
        SanitizationFloor.strip(&headers)
        #expect(headers.map(\.name) == ["Host", "Accept"])
    }

    @Test("authorities are normalised the same way on the fast and the general path")
    func authorities() {
        let cases: [(String, String?)] = [
            ("app.bench.local:443", "app.bench.local:443"),
            ("App.Bench.Local.:443", "app.bench.local:443"),
            ("a_b-c.example:80", "a_b-c.example:80"),
            ("127.1:443", "127.0.0.1:443"),
            ("127.0.0.1:443", "127.0.0.1:443"),
            ("10.0.0.255:443", "10.0.0.255:443"),
            ("010.0.0.1:443", "8.0.0.1:443"),  // octal, as inet_aton reads it
            ("0.0.0.0:443", "0.0.0.0:443"),
            ("0x7f000001:443", "127.0.0.1:443"),
            ("[::1]:443", "[::1]:443"),
            ("[0:0::1]:8443", "[::1]:8443"),
            ("a..b:443", nil),
            (".a:443", nil),
            ("a b:443", nil),
            ("example.org", nil),
            ("example.org:0", nil),
            ("example.org:65536", nil),
            ("example.org:+443", nil),
        ]
        for (text, expected) in cases {
            #expect(Authority.parseConnectTarget(text)?.description == expected, "\(text)")
        }
        #expect(Authority.parse("Example.org", defaultPort: 80)?.description == "example.org:80")
    }
}
