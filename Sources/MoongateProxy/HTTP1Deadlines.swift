import MoongateConfig
import NIOCore

/// The deadlines of an HTTP/1.1 client connection, converted once when the connection opens.
struct HTTP1Deadlines {
    /// A whole request head, from its first byte (or, on a new connection, from the accept).
    let requestHeaders: TimeAmount
    /// The longest pause between reads of a request body.
    let requestBodyIdle: TimeAmount
    /// A whole request body, from the end of its head.
    let requestBody: TimeAmount
    /// The wait for the next request on a keep-alive connection.
    let keepaliveIdle: TimeAmount
    /// No write progress toward a client with bytes pending.
    let responseWriteIdle: TimeAmount
    /// The upstream's response head, from the end of the request.
    let upstreamResponse: TimeAmount

    init(_ timeouts: Timeouts) {
        requestHeaders = timeouts.requestHeaders.timeAmount
        requestBodyIdle = timeouts.client.requestBodyIdle.timeAmount
        requestBody = timeouts.client.requestBody.timeAmount
        keepaliveIdle = timeouts.client.keepaliveIdle.timeAmount
        responseWriteIdle = timeouts.client.responseWriteIdle.timeAmount
        upstreamResponse = timeouts.upstreamResponse.timeAmount
    }
}

/// Where reading a client's requests stands; it decides which deadline runs on the reading side
/// (answering has its own: the upstream response and the client's write progress).
enum ClientReadPhase {
    /// A new connection that has sent nothing: `request_headers` runs from the accept, and expiry
    /// closes without an answer.
    case fresh
    /// Between requests: `keepalive_idle` runs while nothing is being answered, and expiry closes
    /// without an answer.
    case between
    /// Part of a head has arrived: `request_headers` runs from its first byte; expiry is a `408`.
    case head
    /// A body is being read: `request_body_idle` between reads and `request_body` in all; expiry
    /// is a `408` (or a close, once the response has started).
    case body
}
