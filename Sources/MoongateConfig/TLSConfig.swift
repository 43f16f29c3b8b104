/// TLS on a listener (`listeners[].tls`): certificate/key pairs chosen by SNI, the protocol
/// versions and cipher list, and optional client certificates.
public struct ListenerTLSConfig: Sendable, Equatable {
    /// The pairs, in the config's order. One of them is the default (for clients without SNI or
    /// with a name no pair serves): the one marked `default: true`, else the first.
    public var certificates: [CertificatePairConfig]
    /// The lowest protocol version accepted (TLS 1.2 unless set; TLS 1.3 is always the highest).
    public var minVersion: TLSProtocolVersion = .tls12
    /// The TLS 1.2 cipher list in OpenSSL's syntax (TLS 1.3 suites are fixed by BoringSSL).
    public var ciphers: String = ListenerTLSConfig.modernCiphers
    /// The CA bundle (PEM) client certificates are verified against (`client_ca`).
    public var clientCA: String? = nil
    /// Whether client certificates are asked for (`client_cert`).
    public var clientCertificate: ClientCertificateMode = .none

    /// ECDHE key exchange with AEAD ciphers only, ECDSA first.
    public static let modernCiphers =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

    /// The index of the default pair.
    public var defaultIndex: Int { certificates.firstIndex { $0.isDefault } ?? 0 }

    /// Every certificate, key and CA file of this listener (the files the reloader watches).
    public var files: [String] { certificates.flatMap { [$0.certificateFile, $0.keyFile] } + (clientCA.map { [$0] } ?? []) }
}

/// One certificate chain and its private key, both PEM files.
public struct CertificatePairConfig: Sendable, Equatable {
    /// The certificate chain (leaf first), resolved against the config's folder.
    public var certificateFile: String
    /// The private key, resolved against the config's folder.
    public var keyFile: String
    /// The SNI names this pair serves (exact names and `*.example.org` wildcards, lower-case).
    /// Empty: the DNS names of the certificate's subjectAltName.
    public var serverNames: [String]
    /// Serves clients without SNI, or with a name no pair serves.
    public var isDefault: Bool
}

/// A TLS protocol version Moongate can be limited to.
public enum TLSProtocolVersion: String, Sendable, CaseIterable {
    case tls12 = "1.2"
    case tls13 = "1.3"
}

/// Whether a TLS listener asks clients for a certificate.
public enum ClientCertificateMode: String, Sendable, CaseIterable {
    /// Never asked for.
    case none
    /// Asked for; a client without one is served, a client with an untrusted one is refused.
    case request
    /// Required: a handshake without a trusted client certificate fails.
    case require
}

/// TLS toward a cluster's endpoints (`clusters[].tls`).
public struct ClusterTLSConfig: Sendable, Equatable {
    /// The name sent in SNI and verified in the certificate; nil: the endpoint's host (no SNI for
    /// an IP literal, whose certificate is checked against the address).
    public var serverName: String? = nil
    /// The CA bundle (PEM) upstream certificates are verified against; nil: the system trust store.
    public var caFile: String? = nil
    /// Skips certificate verification (`insecure_skip_verify`; `moongate validate` warns about it).
    public var insecureSkipVerify = false
    /// A client certificate and key (PEM) presented to the upstream.
    public var certificateFile: String? = nil
    public var keyFile: String? = nil
    /// The ALPN protocols offered (`h2`, `http/1.1`); nil: what the cluster's protocol speaks.
    public var alpn: [String]? = nil
    /// The lowest protocol version accepted.
    public var minVersion: TLSProtocolVersion = .tls12

    /// Creates the default: verification on against the system trust store, SNI from the endpoint.
    public init() {}

    /// The ALPN protocols offered to a cluster that speaks `upstream`.
    public func offeredALPN(for upstream: ClusterProtocol) -> [String] {
        if let alpn { return alpn }
        switch upstream {
        case .http1: return ["http/1.1"]
        case .http2: return ["h2"]
        case .auto: return ["h2", "http/1.1"]
        }
    }
}
