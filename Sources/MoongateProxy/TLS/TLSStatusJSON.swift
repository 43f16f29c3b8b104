import MoongateConfig

/// The `tls` part of the admin `GET /policy`: per TLS listener, the names each pair serves and
/// the files the last certificate reload rejected (with the reason).
enum TLSStatusJSON {
    static func render(_ listeners: [ListenerCertificates]) -> String {
        let items = listeners.map { listener in
            let pairs = zip(listener.settings.certificates, listener.servedNames).map { config, names in
                "{\"cert\":\(JSON.quote(config.certificateFile)),\"key\":\(JSON.quote(config.keyFile)),"
                    + "\"names\":[\(names.map(JSON.quote).joined(separator: ","))]}"
            }
            let problems = listener.problems.map { "{\"file\":\(JSON.quote($0.file)),\"reason\":\(JSON.quote($0.reason))}" }
            return "{\"listener\":\(JSON.quote(listener.listener)),\"certificates\":[\(pairs.joined(separator: ","))],"
                + "\"rejected\":[\(problems.joined(separator: ","))]}"
        }
        return "[\(items.joined(separator: ","))]"
    }
}
