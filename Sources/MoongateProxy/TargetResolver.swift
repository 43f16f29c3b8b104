import Logging
import MoongateConfig
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
    /// The lookup did not finish within the connect timeout.
    case lookupTimedOut(String)

    var description: String {
        switch self {
        case .unresolvable(let host): "cannot resolve \(host)"
        case .refusedAddress(let host, let cls): "\(host) resolves to a \(cls) address"
        case .lookupTimedOut(let host): "the lookup of \(host) timed out"
        }
    }
}

/// Resolves the names of tunnel and forward targets and cluster endpoints, applies the address
/// floor, and connects to what passed it.
///
/// Every address of a name is checked: special ones (loopback, private, link-local, CGNAT,
/// metadata, ...) are dropped unless allowed exactly, so an allowlist of names cannot be turned
/// into SSRF by DNS; a name left with no address is refused with the class of the last address
/// dropped. The addresses that passed are raced by Happy Eyeballs (``PinnedAddresses``), and only
/// they are dialled (no second lookup, no rebinding). Names come from `resolver.hosts` first, then
/// from the system on a dedicated pool of lookup threads (``LookupCache``).
final class TargetResolver: Sendable {
    private let cache: LookupCache
    private let hosts: [String: [SocketAddress]]

    /// - Parameters:
    ///   - threadPool: the threads that run system lookups (started by the caller).
    ///   - config: the cache and the static hosts.
    init(threadPool: NIOThreadPool, config: ResolverConfig = ResolverConfig()) {
        self.cache = LookupCache(pool: threadPool, ttl: config.cacheTTL.timeAmount, capacity: config.cacheSize)
        var hosts: [String: [SocketAddress]] = [:]
        for (name, addresses) in config.hosts {
            hosts[name] = addresses.compactMap { try? SocketAddress(ipAddress: $0, port: 0) }
        }
        self.hosts = hosts
    }

    /// The address of an IP-literal authority (policy alone decides literals), without a lookup.
    func literalAddress(_ authority: Authority) -> SocketAddress? {
        guard authority.isIPLiteral else { return nil }
        return try? SocketAddress(ipAddress: authority.bareHost, port: authority.port)
    }

    /// Every address to try for `authority`, in order, on `eventLoop`.
    /// - Parameters:
    ///   - allowed: addresses (text form) that may be dialled although special.
    ///   - floor: false for operator-configured cluster endpoints, which may be anything.
    ///   - timeout: how long the lookup may take.
    func resolve(
        _ authority: Authority, allowed: Set<String>, on eventLoop: any EventLoop, floor: Bool = true,
        timeout: TimeAmount = .seconds(5)
    ) -> EventLoopFuture<[SocketAddress]> {
        let host = authority.bareHost
        let port = authority.port
        if authority.isIPLiteral {
            // Literals were seen by policy as they are; policy alone decides them.
            guard let address = literalAddress(authority) else { return eventLoop.makeFailedFuture(DialError.unresolvable(host)) }
            return eventLoop.makeSucceededFuture([address])
        }
        let name = host.hasSuffix(".") ? String(host.dropLast()) : host
        let found: EventLoopFuture<[SocketAddress]>
        if let pinned = hosts[name] {
            found = eventLoop.makeSucceededFuture(pinned)
        } else {
            found = cache.addresses(of: name, on: eventLoop, timeout: timeout)
        }
        return found.flatMapThrowing { addresses in
            try Self.checked(addresses, host: host, port: port, allowed: allowed, floor: floor)
        }
    }

    /// Connects `bootstrap` to `authority`: an IP literal directly, a name on every address that
    /// passes the floor (Happy Eyeballs when there are several).
    func connect(
        _ bootstrap: ClientBootstrap, to authority: Authority, allowed: Set<String>, floor: Bool, timeout: TimeAmount,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<any Channel> {
        if let literal = literalAddress(authority) { return bootstrap.connect(to: literal) }
        return resolve(authority, allowed: allowed, on: eventLoop, floor: floor, timeout: timeout)
            .assumeIsolated().flatMap { addresses in
                if addresses.count == 1 { return bootstrap.connect(to: addresses[0]) }
                return bootstrap.resolver(PinnedAddresses(addresses, on: eventLoop))
                    .connect(host: authority.bareHost, port: authority.port)
            }.nonisolated()
    }

    /// The addresses that pass the floor, with `port`; refused (with the class of the last
    /// address dropped) when none does.
    static func checked(
        _ addresses: [SocketAddress], host: String, port: Int, allowed: Set<String>, floor: Bool
    ) throws -> [SocketAddress] {
        var passed: [SocketAddress] = []
        var refusedClass = "special"
        for var address in addresses {
            guard let ip = address.ipAddress else { continue }
            if floor, let cls = AddressClass.of(ip), cls != "public", !allowed.contains(ip) {
                refusedClass = cls
                continue
            }
            address.port = port
            passed.append(address)
        }
        guard !passed.isEmpty else { throw DialError.refusedAddress(host, refusedClass) }
        return passed
    }
}
