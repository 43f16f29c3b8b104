import Yams

extension ConfigLoader {
    /// Parses a listener's `tls:` mapping; file paths are resolved against `folder`.
    static func parseListenerTLS(_ node: ConfigNode, folder: String) throws(ConfigError) -> ListenerTLSConfig {
        let map = try node.mapping(allowed: ["certificates", "min_version", "ciphers", "client_ca", "client_cert"])
        guard let list = map["certificates"] else { throw node.error("tls needs a list of certificates") }
        var pairs: [CertificatePairConfig] = []
        for item in try list.list() {
            let entry = try item.mapping(allowed: ["cert", "key", "names", "default"])
            guard let cert = entry["cert"] else { throw item.error("a certificate needs cert (a PEM file)") }
            guard let key = entry["key"] else { throw item.error("a certificate needs key (a PEM file)") }
            var names: [String] = []
            if let namesNode = entry["names"] {
                for nameNode in try namesNode.list() {
                    let name = try nameNode.string().lowercased()
                    guard isServerName(name) else {
                        throw nameNode.error("'\(name)' is not a host name or a *.wildcard name")
                    }
                    names.append(name)
                }
            }
            pairs.append(
                CertificatePairConfig(
                    certificateFile: resolve(try cert.string(), against: folder), keyFile: resolve(try key.string(), against: folder),
                    serverNames: names, isDefault: try entry["default"]?.bool() ?? false))
        }
        guard !pairs.isEmpty else { throw list.error("tls needs at least one certificate") }
        if pairs.filter(\.isDefault).count > 1 { throw list.error("only one certificate can be the default") }
        var tls = ListenerTLSConfig(certificates: pairs)
        if let n = map["min_version"] {
            let text = try n.string()
            guard let version = TLSProtocolVersion(rawValue: text) else {
                throw n.error("min_version must be 1.2 or 1.3, not '\(text)'")
            }
            tls.minVersion = version
        }
        if let n = map["ciphers"] { tls.ciphers = try n.string() }
        if let n = map["client_ca"] { tls.clientCA = resolve(try n.string(), against: folder) }
        if let n = map["client_cert"] {
            let text = try n.string()
            guard let mode = ClientCertificateMode(rawValue: text) else {
                throw n.error("client_cert must be none, request or require, not '\(text)'")
            }
            tls.clientCertificate = mode
        }
        if tls.clientCertificate != .none && tls.clientCA == nil {
            throw node.error("client_cert: \(tls.clientCertificate.rawValue) needs client_ca (the CA file client certificates are checked against)")
        }
        return tls
    }

    /// A DNS name, or `*.` followed by one (a wildcard covers exactly one more label).
    static func isServerName(_ name: String) -> Bool {
        let body = name.hasPrefix("*.") ? name.dropFirst(2) : Substring(name)
        guard !body.isEmpty, body.utf8.count <= 253 else { return false }
        return body.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
        }
    }
}

extension ConfigLoader {
    /// Parses a cluster's `tls:` mapping (`tls: true` takes every default).
    static func parseClusterTLS(_ node: ConfigNode, folder: String) throws(ConfigError) -> ClusterTLSConfig? {
        if case .scalar = node.node { return try node.bool() ? ClusterTLSConfig() : nil }
        let map = try node.mapping(allowed: ["sni", "ca_file", "insecure_skip_verify", "cert", "key", "alpn", "min_version"])
        var tls = ClusterTLSConfig()
        if let n = map["sni"] {
            let name = try n.string().lowercased()
            guard isServerName(name), !name.hasPrefix("*.") else { throw n.error("'\(name)' is not a host name") }
            tls.serverName = name
        }
        if let n = map["ca_file"] { tls.caFile = resolve(try n.string(), against: folder) }
        if let n = map["insecure_skip_verify"] { tls.insecureSkipVerify = try n.bool() }
        if let n = map["cert"] { tls.certificateFile = resolve(try n.string(), against: folder) }
        if let n = map["key"] { tls.keyFile = resolve(try n.string(), against: folder) }
        if (tls.certificateFile == nil) != (tls.keyFile == nil) {
            throw node.error("a client certificate needs both cert and key")
        }
        if let n = map["alpn"] {
            let offered = try n.stringList()
            for name in offered where name != "http/1.1" && name != "h2" {
                throw n.error("alpn offers h2 and http/1.1 only, not '\(name)'")
            }
            guard !offered.isEmpty else { throw n.error("alpn must offer h2 or http/1.1") }
            tls.alpn = offered
        }
        if let n = map["min_version"] {
            let text = try n.string()
            guard let version = TLSProtocolVersion(rawValue: text) else {
                throw n.error("min_version must be 1.2 or 1.3, not '\(text)'")
            }
            tls.minVersion = version
        }
        return tls
    }
}

extension ConfigLoader {
    /// A cluster's `via` must name another configured cluster that is reached directly (one hop).
    static func checkParents(_ clusters: [ClusterConfig], node: ConfigNode?) throws(ConfigError) {
        let byName = Dictionary(clusters.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for cluster in clusters {
            guard let via = cluster.via else { continue }
            let problem: String?
            if via == cluster.name {
                problem = "cluster \(cluster.name) cannot be reached through itself"
            } else if let parent = byName[via] {
                problem = parent.via != nil ? "cluster \(cluster.name): its parent \(via) has a parent itself (one hop only)"
                    : parent.tls != nil ? "cluster \(cluster.name): its parent \(via) must be a cleartext proxy (no tls)" : nil
            } else {
                problem = "cluster \(cluster.name): via names no configured cluster ('\(via)')"
            }
            if let problem {
                throw node?.error(problem) ?? ConfigError(file: "", line: nil, keyPath: "clusters", message: problem)
            }
        }
    }
}
