import CTLSShims
import NIOSSL

/// The cipher suite a TLS connection negotiated, for `req.client.tls.cipher`.
///
/// swift-nio-ssl tells the version, ALPN and peer certificate but not the cipher suite. Its handler
/// keeps the connection's BoringSSL `SSL *` in `connection.ssl`; this reads it through Swift's
/// reflection, checking each step's type, and asks BoringSSL (linked in by swift-nio-ssl) for the
/// suite's IETF name. Should a later swift-nio-ssl rename those properties, the answer is `nil`
/// (the field is absent in policy) and `Tests/e2e/test_tls_policy.py` fails, so the
/// upgrade cannot pass unnoticed.
enum NegotiatedCipher {
    static func name(of handler: NIOSSLHandler) -> String? {
        guard let connection = child("connection", of: handler) as AnyObject?,
            String(describing: type(of: connection)) == "SSLConnection",
            let ssl = child("ssl", of: connection) as? OpaquePointer,
            let name = moongate_tls_cipher_name(UnsafeRawPointer(ssl))
        else { return nil }
        return String(cString: name)
    }

    /// A stored property of `object` or of one of its superclasses.
    private static func child(_ label: String, of object: AnyObject) -> Any? {
        var mirror: Mirror? = Mirror(reflecting: object)
        while let current = mirror {
            if let value = current.children.first(where: { $0.label == label })?.value { return value }
            mirror = current.superclassMirror
        }
        return nil
    }
}
