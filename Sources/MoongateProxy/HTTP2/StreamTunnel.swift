import NIOCore

/// The HTTP/2 stream end of a tunnel (a CONNECT stream terminated here, or a translated upgrade or
/// CONNECT): the stream's DATA ↔ bytes of the target's connection, whose end is a ``GlueHandler``
/// like either end of an HTTP/1.1 tunnel. END_STREAM ↔ FIN both ways; a target that fails resets
/// the stream. The target is read only while the stream's flow-control window is open (and not
/// before the stream's 200 is out); the client's DATA is taken only while the target's socket is
/// writable.
final class StreamTunnel: TunnelEnd {
    /// The stream side (strong until the relay ends: the stream's state holds this tunnel).
    private(set) var stream: HTTP2StreamHandler?
    /// The target's connection, once dialled.
    var target: (any Channel)?
    /// The target connection's end of the relay.
    private(set) var socketEnd: GlueHandler!
    private(set) var bytesToTarget = 0
    var bytesFromTarget: Int { socketEnd.bytesRead }
    /// The stream's 200 is out: the target may be read.
    private var ready = false
    /// The target's input ended (its FIN became END_STREAM).
    private var targetEnded = false
    package var sawTraffic = false

    /// `targetOnSocket: false` when the target's connection is itself a stream of an HTTP/2 upstream.
    init(stream: HTTP2StreamHandler, targetOnSocket: Bool = true) {
        self.stream = stream
        socketEnd = GlueHandler.facing(self, onSocket: targetOnSocket)
    }

    // MARK: - The stream's side

    /// DATA from the client, to the target (flushed per read batch).
    func toTarget(_ bytes: ByteBuffer) {
        bytesToTarget += bytes.readableBytes
        sawTraffic = true
        socketEnd.partnerWrite(bytes)
    }

    func flushTarget() { socketEnd.partnerFlush() }

    /// The client sent END_STREAM: the target gets a FIN (and may go on answering).
    func clientEnded() { socketEnd.partnerWriteEOF() }

    var targetIsWritable: Bool { socketEnd.channelIsWritable }

    /// The tunnel is up (or the stream's window opened): the target's reads may go on.
    func resumeTargetReads() {
        ready = true
        socketEnd.partnerBecameWritable()
    }

    // MARK: - TunnelEnd: what the target's end relays

    package func partnerWrite(_ buffer: ByteBuffer) { stream?.targetData(buffer) }
    package func partnerFlush() { stream?.targetReadComplete() }

    package func partnerWriteEOF() {
        targetEnded = true
        stream?.targetEnded()
    }

    /// A FIN after our own FIN closes the socket without an input-closed event: that end is as
    /// clean as a half-close. Only a failure (a reset, an error) resets the stream.
    package func partnerClosed(failed: Bool) {
        if failed {
            stream?.targetFailed()
        } else if !targetEnded {
            partnerWriteEOF()
        }
        stream = nil
    }

    package func partnerBecameWritable() { stream?.resumeClientReads() }

    package var acceptsWrites: Bool { ready && (stream?.streamIsWritable ?? false) }
}
