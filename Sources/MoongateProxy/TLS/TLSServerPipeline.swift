import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOSSL
import NIOTLS

/// The TLS front of a listener's connections:
///
///     CleartextProbe → SNI (ClientHello parsed, certificate chosen) → NIOSSLServerHandler → TLSHandshakeGuard
///
/// The guard bounds the handshake (`timeouts.tls_handshake`), counts failures, and once the
/// handshake completes installs the codec that ALPN chose (`h2` → HTTP/2, `http/1.1` or no ALPN →
/// HTTP/1.1 when the listener speaks it) with the session's details for policy, then leaves.
enum TLSServerPipeline {
    /// The ALPN protocols a listener offers, most preferred first.
    static func alpnProtocols(for protocols: Set<ListenerProtocol>) -> [String] {
        (protocols.contains(.http2) ? ["h2"] : []) + (protocols.contains(.http1) ? ["http/1.1"] : [])
    }

    /// Adds the TLS front to a new connection; `install` builds the codec after the handshake.
    static func configure(
        _ channel: any Channel, certificates: ListenerCertificates, runtime: ProxyRuntime, metrics: TLSMetrics,
        install: @escaping (_ http2: Bool, _ session: TLSSessionInfo) throws -> Void
    ) throws {
        let guardHandler = TLSHandshakeGuard(
            listener: certificates.listener, timeout: runtime.config.timeouts.tlsHandshake.timeAmount, metrics: metrics,
            logger: runtime.logger, install: install)
        let sni = ByteToMessageHandler(
            // The guard is captured strongly: a weak reference would give it a side table, and
            // every retain and release of it during the handshake would take the slow path. A guard
            // that has left its pipeline (the connection closed) makes the insertion below throw.
            SNIHandler { result in
                let name: String?
                switch result {
                case .hostname(let hostname): name = hostname.lowercased()
                case .fallback: name = nil
                }
                return channel.eventLoop.makeCompletedFuture {
                    guardHandler.serverName = name
                    let handler = NIOSSLServerHandler(context: certificates.context(for: name))
                    try channel.pipeline.syncOperations.addHandler(handler, position: .before(guardHandler))
                }
            })
        let operations = channel.pipeline.syncOperations
        try operations.addHandler(CleartextProbe(listener: certificates.listener, metrics: metrics))
        try operations.addHandler(sni)
        try operations.addHandler(guardHandler)
    }
}

/// Looks at a connection's first byte: a TLS handshake record starts with 22. Anything else is a
/// client speaking cleartext to a TLS port; one that looks like HTTP gets a plain 400 that says
/// so, and the connection is closed.
final class CleartextProbe: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let listener: String
    private let metrics: TLSMetrics

    init(listener: String, metrics: TLSMetrics) {
        self.listener = listener
        self.metrics = metrics
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The client half-closed before sending a byte (a port probe): nothing to serve.
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first == 22 {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
            return
        }
        metrics.handshakeFailed(listener: listener, reason: "cleartext")
        guard first >= UInt8(ascii: "A") && first <= UInt8(ascii: "Z") else {
            context.close(promise: nil)
            return
        }
        let body = "This port speaks TLS: use https://.\n"
        var answer = context.channel.allocator.buffer(capacity: 128)
        answer.writeString("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
        context.writeAndFlush(wrapOutboundOut(answer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Bounds a TLS handshake, reports why one failed, and installs the codec when one succeeds. The
/// deadline is a scheduled callback with the guard as its handler (no promise or closures per
/// connection).
final class TLSHandshakeGuard: ChannelInboundHandler, RemovableChannelHandler, NIOScheduledCallbackHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let listener: String
    private let timeout: TimeAmount
    private let metrics: TLSMetrics
    private let logger: Logger
    private let install: (_ http2: Bool, _ session: TLSSessionInfo) throws -> Void
    private var timer: NIOScheduledCallback?
    private var context: ChannelHandlerContext?
    /// The SNI name of the ClientHello (set by the SNI step).
    var serverName: String?

    init(
        listener: String, timeout: TimeAmount, metrics: TLSMetrics, logger: Logger,
        install: @escaping (_ http2: Bool, _ session: TLSSessionInfo) throws -> Void
    ) {
        self.listener = listener
        self.timeout = timeout
        self.metrics = metrics
        self.logger = logger
        self.install = install
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        timer = try? context.eventLoop.assumeIsolated().scheduleCallback(in: timeout, handler: self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    /// The handshake did not complete within `timeouts.tls_handshake`.
    func handleScheduledCallback(eventLoop: some EventLoop) {
        timer = nil
        guard let context else { return }
        metrics.handshakeFailed(listener: listener, reason: "timeout")
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client half-closed mid-handshake: it will not finish it.
            metrics.handshakeFailed(listener: listener, reason: "closed")
            context.close(promise: nil)
            return
        }
        guard let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted(let alpn) = tlsEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        timer?.cancel()
        timer = nil
        let ssl = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
        let session = TLSSessionInfo(
            version: ssl?.tlsVersion.map(Self.name) ?? "TLS", alpn: alpn, sni: serverName,
            cipher: ssl.flatMap(NegotiatedCipher.name(of:)),
            clientCertificate: ssl?.peerCertificate.map(ClientCertificateDetails.make))
        do {
            try install(alpn == "h2", session)
        } catch {
            logger.debug("could not set up a TLS connection's codec", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        metrics.handshakeCompleted(listener: listener, version: session.version)
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason = TLSMetrics.classify(error)
        metrics.handshakeFailed(listener: listener, reason: reason)
        logger.debug(
            "TLS handshake failed",
            metadata: ["listener": "\(listener)", "sni": "\(serverName ?? "-")", "reason": "\(reason)", "error": "\(error)"])
        context.close(promise: nil)
    }

    static func name(_ version: TLSVersion) -> String {
        switch version {
        case .tlsv1: return "TLSv1"
        case .tlsv11: return "TLSv1.1"
        case .tlsv12: return "TLSv1.2"
        case .tlsv13: return "TLSv1.3"
        }
    }
}
