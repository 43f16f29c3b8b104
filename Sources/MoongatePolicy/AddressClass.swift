import CLuaShims

/// The class of an IP address, as `moongate.ip_class` reports it to scripts.
public enum AddressClass {
    /// `public`, `loopback`, `private`, `linklocal`, `cgnat`, `metadata`, `unspecified`, `multicast`,
    /// `broadcast` or `reserved`; nil when `ip` is not an IP literal. IPv4-mapped IPv6 addresses are
    /// classed by their IPv4 address.
    public static func of(_ ip: String) -> String? {
        var text = ip
        return text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars -> String? in
                guard let base = chars.baseAddress, let c = moon_ip_class(base, chars.count) else { return nil }
                return String(decoding: UnsafeRawBufferPointer(start: c, count: strlenOf(c)), as: UTF8.self)
            }
        }
    }

    /// True for every class but `public`.
    public static func isSpecial(_ ip: String) -> Bool {
        guard let c = of(ip) else { return false }
        return c != "public"
    }

    private static func strlenOf(_ p: UnsafePointer<CChar>) -> Int {
        var n = 0
        while p[n] != 0 { n += 1 }
        return n
    }
}
