import MoongateConfig
import MoongatePolicy
import NIOCore

extension ProxyRuntime {
    /// Watches a tunnel whose relay has started, whatever its two ends: it counts in the
    /// open-tunnels gauge; the loop's sweeper closes it after `tunnel_idle` without traffic (`sweep`
    /// is its socket end), and `tunnel_max_duration` closes the client's side (its connection, or
    /// its HTTP/2 stream). When the client's side closes, `target` closes and the tunnel's
    /// access-log line, metrics and log hooks are written with the bytes `bytes` reports.
    func watchTunnel(
        clientSide: TunnelClientSide, target: any Channel, sweep: GlueHandler, loop: LoopContext, record: TunnelRecord,
        status: Int, client: ClientInfo, since start: NIODeadline, bytes: @escaping () -> (in: Int, out: Int)
    ) {
        metrics.tunnelOpened()
        let timeouts = loop.policy.settings.timeouts
        let sweeper = loop.sweeper
        sweeper.add(sweep, idle: timeouts.tunnelIdle.timeAmount)
        if let maxDuration = timeouts.tunnelMaxDuration {
            let task = clientSide.eventLoop.scheduleTask(in: maxDuration.timeAmount) { clientSide.close() }
            clientSide.closeFuture.whenComplete { _ in task.cancel() }
        }
        clientSide.closeFuture.assumeIsolated().whenComplete { _ in
            target.close(promise: nil)
            sweeper.remove(sweep)
            let (bytesIn, bytesOut) = bytes()
            self.metrics.tunnelClosed()
            self.tunnelEnded(record, status: status, client: client, bytesIn: bytesIn, bytesOut: bytesOut, since: start)
            record.runLogHooks(status: status)
        }
    }
}
