import NIOCore
import NIOHTTP2

/// One client stream's handle on its connection: what a ``HTTP2StreamHandler`` writes goes out as
/// frames of this stream through the connection's `NIOHTTP2Handler`, with no channel per stream.
///
/// It also keeps the stream's two flow-control accounts:
/// - **inbound**: DATA the stream has taken and not yet returned to the client as stream
///   WINDOW_UPDATE credit. Credit goes back once half the stream window is used, and not while the
///   stream is ``pause()``d (the far side cannot take more): the client then stops at the window,
///   so a stream buffers at most one window whatever the client sends.
/// - **outbound**: bytes of DATA written and not yet taken by the socket (held by the codec while
///   the client's window is closed, or queued in the socket's buffer). Past 64 KiB the stream is
///   not writable, and it becomes writable again under 32 KiB (``HTTP2StreamHandler/writabilityChanged()``).
final class HTTP2StreamContext {
    let streamID: HTTP2StreamID
    /// Kept after the stream closes: a reset written just before closes the stream at once (the
    /// codec reports it synchronously), and its flush must still reach the connection. Strong: a
    /// weak reference gave the connection handler a side table, which made every retain and
    /// release of it slow (the pipeline makes several per frame). Nothing leaks: the connection
    /// forgets its streams when it leaves its pipeline (``HTTP2ConnectionHandler/closeAllStreams()``),
    /// and from then on its writes and flushes find no channel context and do nothing.
    private(set) var connection: HTTP2ConnectionHandler?
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator

    /// DATA bytes received and not yet credited back to the client.
    var unacknowledged = 0
    /// The stream's reader cannot take more; credit waits for ``read()``.
    private(set) var paused = false
    /// The client sent END_STREAM (on HEADERS or DATA): no more credit is due.
    var inputEnded = false

    /// Bytes of DATA written that the socket has not taken yet.
    private var bufferedOutbound = 0
    private var outboundBlocked = false
    static let highWatermark = 64 * 1024
    static let lowWatermark = 32 * 1024
    /// DATA waiting past this much is flushed at once by ``flushTunnelData()``.
    static let bulkThreshold = 16 * 1024

    private var closePromise: EventLoopPromise<Void>?
    private(set) var isActive = true

    init(streamID: HTTP2StreamID, connection: HTTP2ConnectionHandler, eventLoop: any EventLoop, allocator: ByteBufferAllocator) {
        self.streamID = streamID
        self.connection = connection
        self.eventLoop = eventLoop
        self.allocator = allocator
    }

    // MARK: - Writing

    /// Writes a frame of this stream (flushed by ``flush()``, or at the end of the event-loop tick).
    func write(_ payload: HTTP2Frame.FramePayload) {
        guard isActive, let connection else { return }
        if case .data(let data) = payload, !data.endStream, case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 {
            // Only DATA that leaves the stream open counts: once it ends, writability no longer matters.
            let count = bytes.readableBytes
            bufferedOutbound += count
            if bufferedOutbound >= Self.highWatermark { outboundBlocked = true }
            let promise = eventLoop.makePromise(of: Void.self)
            promise.futureResult.assumeIsolated().whenComplete { _ in self.outboundTaken(count) }
            connection.write(HTTP2Frame(streamID: streamID, payload: payload), promise: promise)
        } else {
            connection.write(HTTP2Frame(streamID: streamID, payload: payload), promise: nil)
        }
    }

    func flush() { connection?.flushStreams() }

    /// Flushes: to the socket now when this stream has bulk DATA waiting (16 KiB or more: sent
    /// while it is still in the CPU's cache), else at the end of the event-loop tick with the other
    /// streams' small writes (many interactive tunnels on one connection: one `writev`).
    func flushTunnelData() {
        if bufferedOutbound >= Self.bulkThreshold {
            connection?.flushStreamsNow()
        } else {
            connection?.flushStreams()
        }
    }

    func writeAndFlush(_ payload: HTTP2Frame.FramePayload) {
        write(payload)
        flush()
    }

    /// The stream can take more DATA: its buffered bytes are under the watermark and the client's
    /// connection is writable.
    var isWritable: Bool { isActive && !outboundBlocked && (connection?.isWritable ?? false) }

    private func outboundTaken(_ count: Int) {
        bufferedOutbound -= count
        guard isActive, outboundBlocked, bufferedOutbound < Self.lowWatermark else { return }
        outboundBlocked = false
        connection?.streamBecameWritable(streamID)
    }

    // MARK: - Reading (inbound credit)

    /// The stream's reader cannot take more now: credit is held back.
    func pause() { paused = true }

    /// The reader can take more: the credit held back goes to the client.
    func read() {
        guard paused, isActive else { return }
        paused = false
        connection?.creditStream(self, flush: true)
    }

    // MARK: - Closing

    /// Resets the stream (RST_STREAM CANCEL), as closing a stream's channel did.
    func close() {
        guard isActive else { return }
        writeAndFlush(.rstStream(.cancel))
    }

    /// The stream closed (both ends, a reset either way, or the connection went).
    func closed() {
        isActive = false
        closePromise?.succeed()
    }

    /// The stream as the tunnel registry and watch see the client's side of a tunnel (made once,
    /// when the stream becomes a tunnel).
    private(set) lazy var tunnelSide: TunnelClientSide = {
        let promise = eventLoop.makePromise(of: Void.self)
        closePromise = promise
        if !isActive { promise.succeed() }
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        let loop = eventLoop
        return TunnelClientSide(id: ObjectIdentifier(self), eventLoop: loop, closeFuture: promise.futureResult) {
            loop.execute { bound.value.close() }
        }
    }()
}
