#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// One blocking system lookup (`getaddrinfo`, which reads `/etc/hosts` and asks DNS): every
/// address of a name, in the order the system prefers them (RFC 6724), with port 0.
enum NameLookup {
    /// Looks `host` up; call it on a lookup thread, never on an event loop.
    static func addresses(of host: String) throws -> [SocketAddress] {
        var name = host
        if let (suffix, delay) = testDelay, host.hasSuffix(suffix) {
            // Test-only (see `testDelay`): a slow lookup, answered as `localhost`.
            usleep(UInt32(min(delay, 60_000)) * 1000)
            name = "localhost"
        }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else {
            throw DialError.unresolvable(host)
        }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let sa = info.pointee.ai_addr {
                switch Int32(info.pointee.ai_family) {
                case AF_INET:
                    sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        addresses.append(SocketAddress($0.pointee, host: host))
                    }
                case AF_INET6:
                    sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        addresses.append(SocketAddress($0.pointee, host: host))
                    }
                default: break
                }
            }
            cursor = info.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw DialError.unresolvable(host) }
        return addresses
    }

    /// For the end-to-end tests only: `MOONGATE_TEST_LOOKUP_DELAY=SUFFIX=MILLISECONDS` makes the
    /// lookup of every name ending in SUFFIX wait that long on its lookup thread and then answer
    /// as `localhost` does (no real name is slow on demand, and no test may ask a real DNS server).
    /// Unset, as in any real deployment, it does nothing.
    static let testDelay: (String, Int)? = {
        guard let raw = getenv("MOONGATE_TEST_LOOKUP_DELAY") else { return nil }
        let text = String(cString: raw)
        guard let equals = text.lastIndex(of: "="), let ms = Int(text[text.index(after: equals)...]), ms >= 0 else { return nil }
        let suffix = String(text[..<equals])
        return suffix.isEmpty ? nil : (suffix, ms)
    }()
}
