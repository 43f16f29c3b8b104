#if canImport(Glibc)
import Logging
import MoongateConfig
import Glibc
#endif
import MoongatePolicy
import NIOCore
import NIOPosix

/// Why a target could not be dialled.
enum DialError: Error, CustomStringConvertible {
    /// The name does not resolve.
    case unresolvable(String)
    /// Every address of the name is loopback, private, link-local, CGNAT, metadata or otherwise
    /// special, and none is allowed exactly (the floor under the scripts).
    case refusedAddress(String, String)

    var description: String {
        switch self {
        case .unresolvable(let host): "cannot resolve \(host)"
        case .refusedAddress(let host, let cls): "\(host) resolves to a \(cls) address"
        }
    }
}

/// Resolves the names of tunnel and forward targets, and applies the address floor: a name that
/// resolves only to special addresses is refused unless the address is allowed exactly, so an
/// allowlist of names cannot be turned into SSRF by DNS. The address that was checked is the one
/// dialled (no second lookup, no rebinding).
final class TargetResolver: Sendable {
    private let threadPool: NIOThreadPool

    init(threadPool: NIOThreadPool) {
        self.threadPool = threadPool
    }

    /// The address of an IP-literal authority (policy alone decides literals), without a lookup.
    func literalAddress(_ authority: Authority) -> SocketAddress? {
        guard authority.isIPLiteral else { return nil }
        return try? SocketAddress(ipAddress: authority.bareHost, port: authority.port)
    }

    /// The address to dial for `authority`, on `eventLoop`.
    /// - Parameter allowed: addresses (text form) that may be dialled although special.
    /// - Parameter floor: false for operator-configured cluster endpoints, which may be anything.
    func resolve(_ authority: Authority, allowed: Set<String>, on eventLoop: any EventLoop, floor: Bool = true)
        -> EventLoopFuture<SocketAddress>
    {
        let host = authority.bareHost
        let port = authority.port
        if authority.isIPLiteral {
            // Literals were seen by policy as they are; policy alone decides them.
            guard let address = literalAddress(authority) else { return eventLoop.makeFailedFuture(DialError.unresolvable(host)) }
            return eventLoop.makeSucceededFuture(address)
        }
        return threadPool.runIfActive(eventLoop: eventLoop) { () throws -> SocketAddress in
            try Self.pick(try Self.lookup(host, port: port), for: host, allowed: allowed, floor: floor)
        }
    }

    /// The address floor: the first of a name's addresses that is public or allowed exactly
    /// (`moongate decide` applies the same choice).
    static func pick(_ addresses: [SocketAddress], for host: String, allowed: Set<String>, floor: Bool) throws(DialError) -> SocketAddress {
        var refusedClass = "special"
        for address in addresses {
            guard let ip = address.ipAddress else { continue }
            if floor, let cls = AddressClass.of(ip), cls != "public", !allowed.contains(ip) {
                refusedClass = cls
                continue
            }
            return address
        }
        throw DialError.refusedAddress(host, refusedClass)
    }

    static func lookup(_ host: String, port: Int) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>? = nil
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else {
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
}
