import MoongateProxy
import NIOCore
import NIOSSL
import NIOTLS

/// `--tls CERT KEY`: the floor's listener over TLS (P7 and P8 of the peer harness), set up the way
/// Moongate's TLS listener is: swift-nio-ssl with ALPN `h2` and `http/1.1`, the small writes of a
/// flush sealed as one record (``TLSRecordGatherer``), and the codec ALPN chose installed once the
/// handshake completes. No SNI table, no handshake deadline, no session details for policy.
enum TLSFloor {
    static func context(certificate: String, key: String) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        configuration.applicationProtocols = ["h2", "http/1.1"]
        return try NIOSSLContext(configuration: configuration)
    }

    /// TLS in front of `channel`; `install(true)` for `h2`, `install(false)` otherwise.
    static func configure(
        _ channel: any Channel, context: NIOSSLContext, install: @escaping (_ http2: Bool) throws -> Void
    ) throws {
        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
        try channel.pipeline.syncOperations.addHandler(TLSRecordGatherer())
        try channel.pipeline.syncOperations.addHandler(ALPNSwitch(install: install))
    }
}

/// Installs the codec ALPN chose when the handshake completes, then leaves.
private final class ALPNSwitch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let install: (_ http2: Bool) throws -> Void

    init(install: @escaping (_ http2: Bool) throws -> Void) { self.install = install }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let tls = event as? TLSUserEvent, case .handshakeCompleted(let alpn) = tls else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        do {
            try install(alpn == "h2")
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }
}
