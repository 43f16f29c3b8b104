import Logging
import MoongatePolicy
import NIOCore
import NIOHTTP2

/// The stream idle timeout (`timeouts.stream_idle`, hardening.md §1.5): a stream on which no frame
/// went either way for that long is reset (RST_STREAM CANCEL), and its upstream connection or
/// tunnel target is closed; the connection and its other streams go on. Frames only move the time
/// of the last activity, which the connection's ``HTTP2StreamClock`` checks.
extension HTTP2StreamHandler {
    /// Called by the connection's ``HTTP2StreamClock`` about every `period`.
    func clockTick(now: NIODeadline) {
        guard let context else { return }
        // Done on this side: only a stream still waiting for the client's END_STREAM is swept.
        if case .closed = state, context.inputEnded { return }
        if now >= lastActivity + idleTimeout {
            runtime.logger.info("HTTP/2 stream idle, reset", metadata: ["client": "\(client.ip):\(client.port)"])
            abort()
            reset(.cancel, context: context)
            clock.remove(self)
            return
        }
        if let responseDeadline, now >= responseDeadline { responseTimerFired() }
    }
}
