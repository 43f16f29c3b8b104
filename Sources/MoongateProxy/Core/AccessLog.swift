import Logging
import MoongatePolicy
import NIOCore

extension Duration {
    /// Nanoseconds, clamped to Int64.
    var nanosecondsClamped: Int64 {
        let (seconds, atto) = components
        let (ns, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : ns + atto / 1_000_000_000
    }

    var timeAmount: TimeAmount { .nanoseconds(nanosecondsClamped) }
}

/// One structured access-log line per request or tunnel.
enum AccessLog {
    static func write(
        _ logger: Logger, message: Logger.Message, client: ClientInfo, method: String, target: String, decision: String,
        plugin: String?, status: Int, bytesIn: Int, bytesOut: Int, since start: NIODeadline
    ) {
        guard logger.logLevel <= .info else { return }
        let ms = Double((NIODeadline.now() - start).nanoseconds) / 1_000_000
        logger.info(
            message,
            metadata: [
                "client": "\(client.ip):\(client.port)", "method": "\(method)", "target": "\(target)",
                "decision": "\(decision)", "plugin": "\(plugin ?? "-")", "status": "\(status)",
                "bytes_in": "\(bytesIn)", "bytes_out": "\(bytesOut)", "duration_ms": "\(ms)",
            ])
    }
}
