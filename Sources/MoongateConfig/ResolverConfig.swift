/// How target names are turned into addresses (`resolver:` in the config).
///
/// Lookups run on a dedicated pool of threads (`getaddrinfo` blocks), so a slow name never waits
/// behind the event loops and many slow names do not hold up a fast one; concurrent lookups of one
/// name share a single call, and answers are kept for `cacheTTL`. `hosts` pins names to addresses
/// without any lookup (like Envoy's static DNS or curl's `--resolve`); the address floor applies to
/// those addresses as to any other.
public struct ResolverConfig: Sendable, Equatable {
    /// Threads that run system lookups (`resolver.threads`, 16): up to this many different names
    /// are looked up at once.
    public var threads = 16
    /// How long a lookup's answer is reused (`resolver.cache_ttl`, 5 s; 0 turns the cache off).
    public var cacheTTL: Duration = .seconds(5)
    /// Names kept in the cache at most (`resolver.cache_size`, 4,096).
    public var cacheSize = 4096
    /// Names answered from the config, never looked up (`resolver.hosts`): lower-case name →
    /// addresses, in the order they are tried.
    public var hosts: [String: [String]] = [:]
    public init() {}
}
