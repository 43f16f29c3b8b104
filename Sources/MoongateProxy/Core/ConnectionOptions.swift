import NIOCore

/// The channel options of Moongate's connections, set synchronously from a bootstrap's
/// initializer. Options given to a bootstrap (`channelOption`, `childChannelOption`) are applied
/// per connection through a chain of futures, a promise, a map and a callback for each option;
/// set here, each is one call on the channel (P4 and P7 open two or one connections per unit of
/// work). `TCP_NODELAY` stays with the bootstraps, whose default it is.
enum ConnectionOptions {
    /// Options for every connection, client or upstream: a half-close from the peer is an event
    /// (tunnels relay it as one), not the end of the channel; `maxMessagesPerRead` for client
    /// connections, which read more than one message per wake-up. Every bootstrap here makes
    /// socket channels, which all have synchronous options.
    static func apply(to channel: any Channel, maxMessagesPerRead: UInt? = nil) throws {
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        try options.setOption(.allowRemoteHalfClosure, value: true)
        if let maxMessagesPerRead { try options.setOption(.maxMessagesPerRead, value: maxMessagesPerRead) }
    }
}
