/// The deadlines an HTTP/1.1 client connection is held to once its request head has arrived, and
/// between requests (the edge defaults of hardening.md §1.5 and §E).
///
/// The request-headers deadline stays in ``Timeouts/requestHeaders``; these cover the rest of a
/// client's turn: the request body, the wait for the next request, and reading the response.
public struct ClientTimeouts: Sendable {
    /// The longest pause between two reads of a request body (`timeouts.request_body_idle`, nginx's
    /// `client_body_timeout`): past it the request gets `408` and the connection closes.
    public var requestBodyIdle: Duration = .seconds(15)
    /// The longest a whole request body may take, from the end of its head (`timeouts.request_body`,
    /// like Envoy's `request_timeout`): a body that trickles in stays bounded.
    public var requestBody: Duration = .seconds(300)
    /// How long a keep-alive connection may wait for the first byte of its next request
    /// (`timeouts.keepalive_idle`); the connection then closes without an answer.
    public var keepaliveIdle: Duration = .seconds(60)
    /// How long a response may sit unsent because the client stopped reading
    /// (`timeouts.response_write_idle`, nginx's `send_timeout`): no write progress for that long
    /// while bytes are pending, and the connection is dropped.
    public var responseWriteIdle: Duration = .seconds(30)

    public init() {}
}
