/// The HTTP/2 settings a listener advertises (`http2:` in the config), with the edge defaults of
/// hardening.md §1.5: 100 concurrent streams, a 64 KiB stream window and a 1 MiB connection window,
/// 16 KiB frames, and a header list as large as an HTTP/1.1 head may be.
public struct HTTP2Config: Sendable, Equatable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once (more are refused
    /// with REFUSED_STREAM).
    public var maxConcurrentStreams = 100
    /// SETTINGS_INITIAL_WINDOW_SIZE: how many bytes of DATA a client may send on a stream before
    /// Moongate opens its window again.
    public var initialStreamWindow = 64 * 1024
    /// The connection's receive window (raised with a WINDOW_UPDATE on stream 0 after the preface).
    public var initialConnectionWindow = 1 << 20
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame payload a client may send.
    public var maxFrameSize = 16 * 1024
    /// SETTINGS_MAX_HEADER_LIST_SIZE; nil: `limits.max_header_bytes`.
    public var maxHeaderListSize: Int? = nil
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441): clients may send extended CONNECT
    /// (`:protocol`, WebSocket over HTTP/2). Off: not advertised, and a `:protocol` is malformed.
    public var extendedConnect = true
    public init() {}
}
