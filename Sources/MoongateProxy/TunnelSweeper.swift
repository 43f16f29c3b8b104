import NIOCore

/// Closes idle tunnels of one event loop. Instead of a timer per tunnel (memory per idle tunnel
/// counts), one repeating sweep per loop runs every quarter of the idle timeout: a tunnel that
/// moved no byte either way during four sweeps in a row is closed, so it goes after between 1 and
/// 1.25 times the idle timeout. Traffic costs one flag store per read.
final class TunnelSweeper {
    private let eventLoop: any EventLoop
    private var tunnels: [ObjectIdentifier: GlueHandler] = [:]
    private var task: Scheduled<Void>?
    private var period = TimeAmount.seconds(1)

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Watches a tunnel (its client-side glue handler) with this idle timeout.
    func add(_ glue: GlueHandler, idle: TimeAmount) {
        tunnels[ObjectIdentifier(glue)] = glue
        guard task == nil else { return }
        period = TimeAmount.nanoseconds(max(idle.nanoseconds / 4, 50_000_000))
        scheduleNext()
    }

    private func scheduleNext() {
        // Strong: the sweeper lives as long as its loop, and a weak reference would give it a side
        // table (every tunnel's add and remove would retain and release it the slow way).
        task = eventLoop.assumeIsolated().scheduleTask(in: period) {
            self.sweep()
            if self.tunnels.isEmpty { self.task = nil } else { self.scheduleNext() }
        }
    }

    func remove(_ glue: GlueHandler) {
        tunnels[ObjectIdentifier(glue)] = nil
    }

    private func sweep() {
        for glue in tunnels.values {
            if glue.takeActivity() {
                glue.idleSweeps = 0
            } else {
                glue.idleSweeps += 1
                if glue.idleSweeps >= 4 { glue.closeTunnel() }
            }
        }
    }
}
