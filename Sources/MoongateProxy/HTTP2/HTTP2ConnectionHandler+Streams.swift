import NIOCore
import NIOHTTP2

/// The stream table of an HTTP/2 client connection: a HEADERS frame on a new stream id opens a
/// stream (swift-nio-http2's state machine has already refused one over
/// SETTINGS_MAX_CONCURRENT_STREAMS, or on a stream id that went backwards), its frames go to its
/// handler, and its StreamClosedEvent (both END_STREAMs, a reset either way) closes it. Frames of
/// streams this table does not have (closed ones, which the state machine let by) are dropped.
extension HTTP2ConnectionHandler {
    func streamFrame(_ frame: HTTP2Frame, context: ChannelHandlerContext) {
        let id = frame.streamID
        let stream: HTTP2StreamHandler
        if let open = streams[id] {
            stream = open
        } else {
            guard case .headers = frame.payload else {
                // WINDOW_UPDATE for a stream that has closed still counts toward the flood guard.
                if case .windowUpdate = frame.payload { guardian.windowUpdateReceived() }
                return
            }
            let streamContext = HTTP2StreamContext(
                streamID: id, connection: self, eventLoop: context.eventLoop, allocator: context.channel.allocator)
            stream = makeStream(streamContext)
            streams[id] = stream
            lastStreamID = max(lastStreamID, id)
            guardian.streamOpened()
            stream.attach(streamContext)
        }
        if !stream.inReadBatch {
            stream.inReadBatch = true
            touched.append(stream)
        }
        guard case .data(let data) = frame.payload else {
            if case .headers(let headers) = frame.payload, headers.endStream { stream.context?.inputEnded = true }
            stream.received(frame.payload)
            return
        }
        // A stream's credit returns at the end of the read batch, once its reader has taken the
        // bytes and can take more (the connection's follows the codec's window:
        // connectionWindowChanged).
        let length = data.data.readableBytes + (data.paddingBytes.map { $0 + 1 } ?? 0)
        guard let streamContext = stream.context else { return }
        streamContext.unacknowledged += length
        if data.endStream { streamContext.inputEnded = true }
        stream.received(frame.payload)
    }

    /// The connection's receive window as swift-nio-http2 keeps it: below half of
    /// `http2.initial_connection_window`, credit tops it up again. The codec's own figure counts
    /// every DATA byte received, also the bytes of frames it dropped without handing them on (DATA
    /// still in flight on a stream just reset): counting only what reaches the streams would leak
    /// the window until uploads on the connection stall. One top-up at a time: the next waits until
    /// the codec shows the last one applied.
    func connectionWindowChanged(inbound window: Int) {
        if window > connectionWindow / 2 {
            connectionCreditPending = false
            return
        }
        guard let context, !connectionCreditPending, window < connectionWindow else { return }
        connectionCreditPending = true
        let update = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: connectionWindow - window))
        // Flushed into the codec at once (its state applies the credit); the socket write still
        // waits for the end of the read batch or tick (FlushCoalescer).
        context.writeAndFlush(wrapOutboundOut(update), promise: nil)
    }

    /// Returns a stream's credit to the client: a quarter of its window or more, or (`flush`, the
    /// reader resumed) whatever is owed; never while the reader is paused or after the client's
    /// END_STREAM. True when a WINDOW_UPDATE was written.
    @discardableResult
    func creditStream(_ stream: HTTP2StreamContext, flush: Bool) -> Bool {
        guard let context, stream.isActive, !stream.paused, !stream.inputEnded, stream.unacknowledged > 0,
            flush || stream.unacknowledged >= streamWindow / 4
        else { return false }
        let update = HTTP2Frame(streamID: stream.streamID, payload: .windowUpdate(windowSizeIncrement: stream.unacknowledged))
        stream.unacknowledged = 0
        context.write(wrapOutboundOut(update), promise: nil)
        if flush { context.flush() }
        return true
    }

    /// The end of a read batch: each stream that had frames in it is told (to flush its upstream
    /// once), then gets back the credit its reader took in the batch, in one WINDOW_UPDATE. (Per
    /// DATA frame, the codec's work for a WINDOW_UPDATE was 9% of a bulk upload's CPU.) A quarter
    /// of the window, not half, keeps a 64 KiB window from stalling an upload between two reads.
    func readBatchEnded() {
        guard !touched.isEmpty else { return }
        let batch = touched
        touched.removeAll(keepingCapacity: true)
        var credited = false
        for stream in batch {
            stream.inReadBatch = false
            stream.readComplete()
            if let streamContext = stream.context, creditStream(streamContext, flush: false) { credited = true }
        }
        if credited { context?.flush() }
    }

    /// A stream closed: its handler lets go of its upstream or tunnel; the last stream of a
    /// draining connection closes it.
    func streamClosed(_ id: HTTP2StreamID) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        stream.closed()
        guard quiescing, streams.isEmpty, let context else { return }
        // The stream's last frames are flushed after this call returns: close on the next tick.
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.execute { loopBound.value.close(promise: nil) }
    }

    /// The connection went: every stream still open closes with it.
    func closeAllStreams() {
        guard !streams.isEmpty else { return }
        let open = Array(streams.values)
        streams.removeAll()
        for stream in open { stream.closed() }
    }

    // MARK: - What streams write

    func write(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    /// A stream's flush: the connection's (deferred to the end of the read batch, or of the
    /// event-loop tick, by the ``FlushCoalescer`` in front of the codec).
    func flushStreams() { context?.flush() }

    /// A stream's flush that goes to the socket at once (bulk tunnel data).
    func flushStreamsNow() {
        context?.flush()
        coalescer?.flushImmediately()
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func streamBecameWritable(_ id: HTTP2StreamID) { streams[id]?.writabilityChanged() }
}
