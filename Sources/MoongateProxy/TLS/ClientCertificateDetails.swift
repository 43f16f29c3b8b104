import MoongatePolicy
import NIOSSL

/// Turns a verified client certificate into what policy reads (`req.client.tls.subject`, `sans`,
/// `sha256`).
enum ClientCertificateDetails {
    static func make(_ certificate: NIOSSLCertificate) -> ClientCertificateInfo {
        let subject = certificate.subjectName.map { "\(shortName($0.type))=\($0.value)" }.joined(separator: ",")
        var sans: [String] = []
        for name in certificate._subjectAlternativeNames() {
            let bytes = Array(name.contents)
            if name.nameType == .ipAddress {
                sans.append(ipText(bytes))
            } else {
                sans.append(String(decoding: bytes, as: UTF8.self))
            }
        }
        let der = (try? certificate.toDERBytes()) ?? []
        return ClientCertificateInfo(subject: subject, sans: sans, sha256: SHA256.hex(der))
    }

    private static func shortName(_ type: SSLCertificateNameType) -> String {
        switch type {
        case .commonName: return "CN"
        case .organization: return "O"
        case .organizationalUnit: return "OU"
        case .country: return "C"
        case .state: return "ST"
        case .city: return "L"
        case .emailAddress: return "emailAddress"
        case .userId: return "UID"
        default: return "?"
        }
    }

    private static func ipText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        var groups: [String] = []
        var index = 0
        while index + 1 < bytes.count {
            groups.append(String(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]), radix: 16))
            index += 2
        }
        return groups.joined(separator: ":")
    }
}
