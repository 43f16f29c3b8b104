import Logging
import MoongatePolicy
import NIOCore

/// The access-log line and the request metrics of each request an HTTP/1.1 connection answers.
extension HTTP1ProxyHandler {
    func accessLog(
        method: String, target: String, decision: String, plugin: String?, status: Int, bytesIn: Int, bytesOut: Int,
        since start: NIODeadline
    ) {
        AccessLog.write(
            runtime.accessLogger, message: "request", client: client, method: method, target: target, decision: decision,
            plugin: plugin, status: status, bytesIn: bytesIn, bytesOut: bytesOut, since: start)
    }

    func logExchange(_ exchange: Exchange, status: Int) {
        runtime.metrics.request(decision: exchange.outcome.decision.verb, status: status)
        accessLog(
            method: exchange.request.method,
            target: exchange.request.target?.description ?? exchange.request.authority ?? "-",
            decision: exchange.outcome.decision.summary, plugin: exchange.outcome.plugin, status: status,
            bytesIn: exchange.bytesFromClient, bytesOut: exchange.bytesToClient, since: exchange.startedAt)
        if exchange.instance.hasLogHooks {
            exchange.instance.log(request: exchange.request, status: status)
        }
    }
}
