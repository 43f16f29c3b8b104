/// The protocol Moongate speaks to a cluster's endpoints (`protocol:` on a cluster).
public enum ClusterProtocol: String, Sendable, CaseIterable {
    /// HTTP/1.1: exclusive keep-alive connections, pooled per event loop.
    case http1
    /// HTTP/2 with prior knowledge (h2c): requests multiplexed as streams over one connection per
    /// endpoint and event loop (more when the peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached).
    case http2
    /// Over TLS only: ALPN offers `h2` and `http/1.1` and the server's choice decides, learned per
    /// event loop from the first connection (HTTP/2 streams when it chose `h2`, else HTTP/1.1).
    case auto
}
