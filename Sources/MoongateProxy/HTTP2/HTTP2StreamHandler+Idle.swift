import Logging
import MoongatePolicy
import NIOCore
import NIOHTTP2

/// The stream idle timeout (`timeouts.stream_idle`, hardening.md §1.5): a stream on which no frame
/// went either way for that long is reset (RST_STREAM CANCEL), and its upstream connection or
/// tunnel target is closed; the connection and its other streams go on. Frames only move the time
/// of the last activity; the timer is re-armed when it fires early, not on every frame.
extension HTTP2StreamHandler {
    func armIdleTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            loopBound.value.idleTimerFired()
        }
    }

    private func idleTimerFired() {
        idleTimer = nil
        guard let context else { return }
        if case .closed = state { return }
        let due = lastActivity + idleTimeout
        if due > .now() {
            armIdleTimer(at: due, context: context)
            return
        }
        runtime.logger.info("HTTP/2 stream idle, reset", metadata: ["client": "\(client.ip):\(client.port)"])
        abort()
        reset(.cancel, context: context)
    }
}
