import NIOCore

/// One end of a tunnel, as the other end's relay sees it: a socket channel (``GlueHandler``) or an
/// HTTP/2 stream (``StreamTunnel``). A tunnel is always two ends relaying to each other through
/// these calls, whatever they are: bytes, flushes at the end of a read batch, half-close (FIN ↔
/// END_STREAM), abort (close ↔ RST_STREAM), and back-pressure (a side reads only while its partner
/// accepts writes: a socket's writability, a stream's flow-control window).
package protocol TunnelEnd: AnyObject {
    /// Bytes the partner read, to send on this end (they leave at ``partnerFlush()``).
    func partnerWrite(_ buffer: ByteBuffer)
    func partnerFlush()
    /// The partner's input ended cleanly: this end's output half-closes once what was written has
    /// gone (a FIN, END_STREAM).
    func partnerWriteEOF()
    /// The partner closed; `failed` when it failed (a reset or an error) rather than ending cleanly.
    func partnerClosed(failed: Bool)
    /// This end can take writes again: a read held for it goes ahead on the partner.
    func partnerBecameWritable()
    /// Whether this end takes writes now (the partner reads only while it does).
    var acceptsWrites: Bool { get }
    /// Set by every read on this end; the idle sweeper reads and clears it.
    var sawTraffic: Bool { get set }
}
