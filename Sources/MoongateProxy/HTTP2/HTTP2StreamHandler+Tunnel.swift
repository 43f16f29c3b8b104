import Logging
import MoongatePolicy
import NIOCore
import NIOHPACK
import NIOHTTP2

/// A CONNECT stream terminated here (RFC 9113 §8.5): the target is dialled, `200`, then the stream
/// and the target's connection relay bytes through a ``StreamTunnel``.
extension HTTP2StreamHandler {
    func startTunnel(
        to target: Authority, request: PolicyRequest, instance: PolicyInstance, outcome: PolicyOutcome, endStream: Bool,
        context: HTTP2StreamContext
    ) {
        let dial = TunnelDial(request: request, outcome: outcome, instance: instance)
        dial.clientEnded = endStream
        state = .dialling(dial)
        let tunnel = StreamTunnel(stream: self)
        let dialled = outcome.tunnelTLS.map { tls in
            TunnelTLS.dial(target, tls: tls, then: tunnel.socketEnd, runtime: runtime, loop: loop, on: context.eventLoop)
        } ?? UpstreamDialer.dialTarget(target, with: tunnel.socketEnd, runtime: runtime, loop: loop, on: context.eventLoop)
        dialled.assumeIsolated().whenComplete { result in
            // The two ends hold each other until the socket end leaves a pipeline; without a
            // connection it never joins one.
            if case .failure = result { tunnel.socketEnd.forgetPartner() }
            guard case .dialling(let current) = self.state, current === dial, let context = self.context else {
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .success(let channel):
                self.tunnelUp(tunnel, channel: channel, dial: dial, context: context)
            case .failure(let error):
                let (status, reason) = UpstreamDialer.failure(error)
                self.runtime.logger.info("tunnel target unreachable", metadata: ["target": "\(target)", "error": "\(error)"])
                self.answer(LocalAnswer(status: status, body: reason, keepAlive: true), request: request, outcome: outcome, context: context)
            }
        }
    }

    private func tunnelUp(_ tunnel: StreamTunnel, channel: any Channel, dial: TunnelDial, context: HTTP2StreamContext) {
        tunnel.target = channel
        state = .relaying(tunnel)
        runtime.tunnels.openUntilClosed(context.tunnelSide, client: client.ip)
        // A 2xx to CONNECT carries no content-length (RFC 9110 §9.3.6).
        context.writeAndFlush(.headers(.init(headers: HPACKHeaders([(":status", "200")]))))
        for bytes in dial.early { tunnel.toTarget(bytes) }
        tunnel.flushTarget()
        if dial.clientEnded { tunnel.clientEnded() }
        trackTunnel(tunnel, target: channel, request: dial.request, outcome: dial.outcome, instance: dial.instance, context: context)
        tunnel.resumeTargetReads()
    }

    /// Keeps the open-tunnels gauge until the stream closes (the caps counted it before its 200:
    /// ``TunnelRegistry/openUntilClosed(_:client:)``), then closes the target and writes its
    /// access-log line (and runs the log hooks under the generation that admitted it). The tunnel
    /// timeouts hold as on HTTP/1.1: `tunnel_idle` (the loop's sweeper closes the target; the
    /// stream ends) and `tunnel_max_duration` (the stream is reset).
    func trackTunnel(
        _ tunnel: StreamTunnel, target channel: any Channel, request: PolicyRequest, outcome: PolicyOutcome,
        instance: PolicyInstance, context: HTTP2StreamContext
    ) {
        runtime.watchTunnel(
            clientSide: context.tunnelSide, target: channel, sweep: tunnel.socketEnd, loop: loop,
            record: TunnelRecord(request: request, outcome: outcome, instance: instance), status: 200, client: client,
            since: startedAt
        ) { (tunnel.bytesToTarget, tunnel.bytesFromTarget) }
    }

    // MARK: - What the tunnel's TCP side reports

    /// Bytes from the target go out as DATA (flushed at the end of each read batch).
    func targetData(_ bytes: ByteBuffer) {
        lastActivity = .now()
        guardian.sentData()
        context?.write(.data(.init(data: .byteBuffer(bytes), endStream: false)))
    }

    func targetReadComplete() { context?.flushTunnelData() }

    /// The target half-closed: END_STREAM.
    func targetEnded() {
        guard let context else { return }
        lastActivity = .now()
        let empty = context.allocator.buffer(capacity: 0)
        context.writeAndFlush(.data(.init(data: .byteBuffer(empty), endStream: true)))
    }

    /// The target connection failed or closed without a FIN: the stream is reset.
    func targetFailed() {
        guard let context, case .relaying = state else { return }
        reset(.connectError, context: context)
    }

    /// This stream can take more DATA.
    var streamIsWritable: Bool { context?.isWritable ?? false }
}
