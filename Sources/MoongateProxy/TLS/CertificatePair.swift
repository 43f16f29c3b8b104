#if canImport(Glibc)
import Glibc
#endif
import MoongateConfig
import NIOSSL

/// Why a certificate, key or CA file could not be served, with the file at fault.
public struct CertificateProblem: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file at fault.
    public let file: String
    /// What is wrong with it.
    public let reason: String

    /// Creates a problem report.
    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }

    public var description: String { "\(file): \(reason)" }
}

/// One certificate/key pair, read, checked and turned into a server context: the unit that a
/// reload replaces (or keeps, when the new files are broken).
struct CertificatePair: Sendable {
    let config: CertificatePairConfig
    /// The SNI names served: the configured ones, else the certificate's DNS names.
    let serverNames: [String]
    let context: NIOSSLContext
    /// The leaf's expiry (seconds since the epoch).
    let notAfter: Int

    /// Reads the pair's files and builds its context with the listener's settings.
    /// - Throws: ``CertificateProblem`` naming the file and the reason (unreadable, not PEM, no
    ///   certificate, expired, key that does not match, settings BoringSSL refuses).
    static func load(_ config: CertificatePairConfig, settings: ListenerTLSConfig, alpn: [String]) throws(CertificateProblem) -> CertificatePair {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(config.certificateFile)
        } catch {
            throw CertificateProblem(file: config.certificateFile, reason: "not a readable PEM certificate chain (\(error))")
        }
        guard let leaf = chain.first else {
            throw CertificateProblem(file: config.certificateFile, reason: "no certificate in the file")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: config.keyFile, format: .pem)
        } catch {
            throw CertificateProblem(file: config.keyFile, reason: "not a readable PEM private key (\(error))")
        }
        let now = time(nil)
        if leaf.notValidAfter < now {
            throw CertificateProblem(file: config.certificateFile, reason: "the certificate expired (not valid after \(leaf.notValidAfter), now \(now))")
        }
        guard Self.keyMatches(key, leaf) else {
            throw CertificateProblem(file: config.keyFile, reason: "the private key does not match the certificate in \(config.certificateFile)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.minimumTLSVersion = settings.minVersion == .tls13 ? .tlsv13 : .tlsv12
        tls.maximumTLSVersion = .tlsv13
        tls.cipherSuites = settings.ciphers
        tls.applicationProtocols = alpn
        if let ca = settings.clientCA, settings.clientCertificate != .none {
            tls.trustRoots = .file(ca)
            tls.certificateVerification = settings.clientCertificate == .require ? .noHostnameVerification : .optionalVerification
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw CertificateProblem(file: config.certificateFile, reason: "refused by the TLS library (\(error))")
        }
        let names = config.serverNames.isEmpty ? Self.dnsNames(leaf) : config.serverNames
        return CertificatePair(config: config, serverNames: names, context: context, notAfter: Int(leaf.notValidAfter))
    }

    /// True when the key's public half is the certificate's public key.
    private static func keyMatches(_ key: NIOSSLPrivateKey, _ certificate: NIOSSLCertificate) -> Bool {
        // A context holding only this pair fails to build when they do not match (BoringSSL checks
        // the key against the certificate when both are set).
        let probe = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        return (try? NIOSSLContext(configuration: probe)) != nil
    }

    /// The DNS names of the certificate's subjectAltName, lower-case.
    static func dnsNames(_ certificate: NIOSSLCertificate) -> [String] {
        var names: [String] = []
        for name in certificate._subjectAlternativeNames() where name.nameType == .dnsName {
            names.append(String(decoding: Array(name.contents), as: UTF8.self).lowercased())
        }
        return names
    }
}
