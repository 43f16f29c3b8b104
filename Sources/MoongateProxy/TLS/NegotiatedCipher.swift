@_spi(Reflection) import Swift
import CTLSShims
import NIOSSL

/// The cipher suite a TLS connection negotiated, for `req.client.tls.cipher`.
///
/// swift-nio-ssl tells the version, ALPN and peer certificate but not the cipher suite. Its handler
/// keeps the connection's BoringSSL `SSL *` in `connection.ssl`; this reads it and asks BoringSSL
/// (linked in by swift-nio-ssl) for the suite's IETF name. Where the two properties lie in their
/// objects is found once, from the types' reflection metadata (field names, types and offsets),
/// and checked: `connection` must be an `SSLConnection`, `ssl` an `OpaquePointer`. Each handshake
/// then costs two loads (mirroring each handler cost about 17 µs per handshake, 5% of P7). Should a
/// later swift-nio-ssl rename or retype those properties, the answer is `nil` (the field is absent
/// in policy) and `Tests/e2e/test_tls_policy.py` fails, so the upgrade cannot pass unnoticed.
enum NegotiatedCipher {
    /// Byte offsets of `NIOSSLHandler.connection` and of `SSLConnection.ssl` in their objects.
    private static let offsets: (connection: Int, ssl: Int)? = {
        guard let (connection, connectionType) = field("connection", of: NIOSSLHandler.self),
            String(describing: connectionType) == "SSLConnection",
            let (ssl, sslType) = field("ssl", of: connectionType), sslType == OpaquePointer.self
        else { return nil }
        return (connection, ssl)
    }()

    static func name(of handler: NIOSSLHandler) -> String? {
        guard let offsets else { return nil }
        let ssl = withExtendedLifetime(handler) {
            let object = UnsafeRawPointer(Unmanaged.passUnretained(handler).toOpaque())
            // A class reference is stored as the object's address; the handler keeps it alive.
            let connection = object.load(fromByteOffset: offsets.connection, as: UnsafeRawPointer.self)
            return connection.load(fromByteOffset: offsets.ssl, as: UnsafeRawPointer?.self)
        }
        guard let ssl, let name = moongate_tls_cipher_name(ssl) else { return nil }
        return String(cString: name)
    }

    /// The offset and type of the stored property `label` of the class `type`.
    private static func field(_ label: String, of type: Any.Type) -> (Int, Any.Type)? {
        var found: (Int, Any.Type)?
        // `.classType` (bit 0), spelled by value: the stdlib declares it a mutable static.
        _forEachField(of: type, options: _EachFieldOptions(rawValue: 1)) { name, offset, fieldType, _ in
            guard String(cString: name) == label else { return true }
            found = (offset, fieldType)
            return false
        }
        return found
    }
}
