import MoongateConfig

extension TLSSessionInfo {
    /// The keys a test case's `tls` table and `moongate decide --tls` take.
    static let keys = ["version", "alpn", "sni", "cipher", "subject", "sans", "sha256"]

    /// Reads `sni=a.test,alpn=h2,version=TLSv1.3,subject=CN=alice,sans=a.test|b.test,sha256=…`
    /// (`moongate decide --tls`). A value runs to the next `,key=`; `sans` are separated by `|`.
    /// - Throws: ``CaseError`` for an unknown key or a part without `=`.
    public init(spec: String) throws(CaseError) {
        var values: [String: String] = [:]
        var currentKey: String?
        for part in spec.split(separator: ",", omittingEmptySubsequences: false) {
            if let equals = part.firstIndex(of: "="), Self.keys.contains(String(part[..<equals])) {
                let key = String(part[..<equals])
                values[key] = String(part[part.index(after: equals)...])
                currentKey = key
            } else if let key = currentKey {
                values[key, default: ""] += "," + part  // a value with a comma (a subject)
            } else {
                throw CaseError("--tls takes key=value pairs (\(Self.keys.joined(separator: ", "))), not '\(part)'")
            }
        }
        try self.init(values: values, sans: values["sans"].map { $0.split(separator: "|").map(String.init) })
    }

    /// Reads a test case's `tls` table (`{ sni = "a.test", alpn = "h2", sans = { "a.test" }, ... }`).
    init(caseValue value: ConfigValue) throws(CaseError) {
        guard case .table(let pairs) = value else { throw CaseError("'tls' must be true, false or a table") }
        for (key, _) in pairs where !Self.keys.contains(key) {
            throw CaseError("tls: unknown key '\(key)' (known keys: \(Self.keys.joined(separator: ", ")))")
        }
        let fields = CaseFields(value)
        var values: [String: String] = [:]
        for key in Self.keys where key != "sans" {
            do {
                values[key] = try fields.string(key)
            } catch {
                throw CaseError("tls: \(error.message)")
            }
        }
        let sans: [String]?
        do {
            sans = try fields.strings("sans")
        } catch {
            throw CaseError("tls: \(error.message)")
        }
        try self.init(values: values, sans: sans)
    }

    private init(values: [String: String], sans: [String]?) throws(CaseError) {
        let hasCertificate = values["subject"] != nil || sans != nil || values["sha256"] != nil
        self.init(
            version: values["version"] ?? "TLSv1.3", alpn: values["alpn"], sni: values["sni"]?.lowercased(),
            cipher: values["cipher"],
            clientCertificate: hasCertificate
                ? ClientCertificateInfo(subject: values["subject"] ?? "", sans: sans ?? [], sha256: values["sha256"] ?? "") : nil)
    }
}
