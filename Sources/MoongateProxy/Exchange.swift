import Logging
import MoongateConfig
import MoongatePolicy
import NIOCore
import NIOHTTP1

/// One forwarded request and its response: the pinned policy instance (its `sanitize_response` and
/// `log` hooks run under the generation that admitted the request), the upstream connection, and
/// what has been sent each way.
final class Exchange {
    enum Kind {
        /// An ordinary request to a cluster or to its own authority.
        case forward
        /// An HTTP/1.1 upgrade (WebSocket): a 101 turns the exchange into a tunnel.
        case upgrade
        /// A CONNECT sent on to a parent proxy (tunnel_via): a 2xx turns it into a tunnel.
        case connectVia
    }

    let kind: Kind
    let request: PolicyRequest
    let instance: PolicyInstance
    let outcome: PolicyOutcome
    let upstreamKey: String
    /// This loop's idle connections to that upstream (looked up once per exchange).
    let idle: IdleConnections
    let poolLimit: Int
    let clientKeepAlive: Bool
    let startedAt: NIODeadline
    /// Request parts written before the upstream connection was ready.
    var pending: [ByteBuffer] = []
    /// How the request body is framed toward the upstream (set with the head).
    var requestFraming: BodyFraming = .none
    var upstream: UpstreamHandler?
    var requestComplete = false
    var responseHeadSent = false
    /// A request without a body to an HTTP/2 cluster: where it went and its head, to send it again
    /// on another stream if the upstream refuses it unprocessed (up to three attempts in all).
    var retry: (destination: UpstreamDestination, head: ByteBuffer)?
    var attempts = 1
    /// The trailer fields of a chunked upstream response, carried to the client with its end.
    var responseTrailers: [HeaderField] = []
    /// How the response body is framed toward the client (set with the head).
    var responseFraming: BodyFraming = .none
    /// The client connection closes after this response (set with the head).
    var closeClientAfter = false
    var responseComplete = false
    var upstreamKeepAlive = true
    var status = 0
    var bytesFromClient = 0
    var bytesToClient = 0
    /// A 101 (upgrade) or 2xx (connectVia) head, acted on when its message ends.
    var tunnelHead: UpstreamResponseHead?

    init(
        kind: Kind, request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome, upstreamKey: String,
        idle: IdleConnections, poolLimit: Int, clientKeepAlive: Bool, startedAt: NIODeadline
    ) {
        self.idle = idle
        self.kind = kind
        self.request = request
        self.instance = instance
        self.outcome = outcome
        self.upstreamKey = upstreamKey
        self.poolLimit = poolLimit
        self.clientKeepAlive = clientKeepAlive
        self.startedAt = startedAt  // the codec read the clock when the head arrived
    }

    /// Bytes were written upstream since the last flush.
    private var unflushed = false

    /// Writes bytes now, or keeps them until the connection is ready.
    private func send(_ bytes: ByteBuffer) {
        if let upstream {
            upstream.write(bytes)
            unflushed = true
        } else {
            pending.append(bytes)
        }
    }

    /// Flushes what was written since the last flush (one flush per batch of client reads, not
    /// one per part).
    func flushUpstream() {
        guard unflushed, let upstream else { return }
        unflushed = false
        upstream.flush()
    }

    /// Sends request body bytes with the request's framing.
    func sendBody(_ buffer: ByteBuffer, allocator: ByteBufferAllocator) {
        switch requestFraming {
        case .length:
            send(buffer)
        case .chunked where buffer.readableBytes > 0:
            send(HTTP1Wire.chunkPrefix(buffer.readableBytes, allocator: allocator))
            send(buffer)
            send(HTTP1Wire.chunkEnd)
        case .chunked, .none, .untilClose:
            break
        }
    }

    /// Ends the request (the last chunk when chunked; client trailers are dropped) and, unless
    /// `flush` is false (the caller flushes once the rest of its input is parsed), flushes.
    func sendEnd(flush: Bool = true) {
        if requestFraming == .chunked { send(HTTP1Wire.lastChunk) }
        if flush { flushUpstream() }
    }

    /// Attaches the connection and writes `first` (a request head not yet kept) and what was
    /// waiting; flushes unless `flush` is false (then the caller flushes with ``flushUpstream()``,
    /// after parsing the rest of what it has read: nothing of a request that turns out malformed
    /// leaves before then, and the connection is closed with the unflushed bytes).
    func attach(_ handler: UpstreamHandler, first: ByteBuffer? = nil, flush: Bool = true) {
        upstream = handler
        switch kind {
        case .forward: handler.expectResponse(.response(head: request.method == "HEAD"))
        case .upgrade: handler.expectResponse(.upgrade)
        case .connectVia: handler.expectResponse(.connect)
        }
        if let first { handler.write(first) }
        if !pending.isEmpty {
            for bytes in pending { handler.write(bytes) }
            pending = []
        }
        unflushed = true
        if flush { flushUpstream() }
    }
}
