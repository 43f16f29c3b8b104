import Logging
import MoongateConfig
import NIOCore
import Synchronization

/// The client's side of a tunnel, as the registry and the tunnel watch see it: a connection (an
/// HTTP/1.1 tunnel) or an HTTP/2 stream (``HTTP2StreamContext/tunnelSide``).
struct TunnelClientSide: Sendable {
    /// Tells one side from another.
    let id: ObjectIdentifier
    let eventLoop: any EventLoop
    /// Completes when the side has closed.
    let closeFuture: EventLoopFuture<Void>
    /// Closes the side (from any thread): the connection, or the stream with RST_STREAM CANCEL.
    let close: @Sendable () -> Void

    init(id: ObjectIdentifier, eventLoop: any EventLoop, closeFuture: EventLoopFuture<Void>, close: @escaping @Sendable () -> Void) {
        self.id = id
        self.eventLoop = eventLoop
        self.closeFuture = closeFuture
        self.close = close
    }

    init(_ channel: any Channel) {
        self.init(id: ObjectIdentifier(channel), eventLoop: channel.eventLoop, closeFuture: channel.closeFuture) {
            channel.close(promise: nil)
        }
    }
}

/// The open tunnels (for the tunnel caps, the open-tunnels gauge and graceful shutdown), in total
/// and per client address. Locked only when a tunnel is asked for, opens or closes, never per byte.
final class TunnelRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: TunnelClientSide] = [:]
        var perClient: [String: Int] = [:]
    }

    private let state = Mutex(State())

    /// Open tunnels.
    var count: Int { state.withLock { $0.channels.count } }

    /// Why a new tunnel cannot open now, if it cannot: the global cap or the client's cap is reached.
    func refusal(client: String, limits: Limits) -> String? {
        state.withLock { state in
            if state.channels.count >= limits.maxTunnels { return "too many tunnels" }
            if state.perClient[client, default: 0] >= limits.maxTunnelsPerClient { return "too many tunnels from this client" }
            return nil
        }
    }

    /// Open tunnels of one client address.
    func count(client: String) -> Int { state.withLock { $0.perClient[client, default: 0] } }

    /// Counts a tunnel (once per client side, however often it is called).
    private func opened(_ side: TunnelClientSide, client: String) {
        state.withLock { state in
            guard state.channels.updateValue(side, forKey: side.id) == nil else { return }
            state.perClient[client, default: 0] += 1
        }
    }

    /// Counts a tunnel from now until its client side closes. Handlers call it before the
    /// tunnel's 2xx goes out: a CONNECT the client sends as soon as it reads that answer must find
    /// this one counted, whichever loop takes it (the caps of hardening §C.12).
    func openUntilClosed(_ side: TunnelClientSide, client: String) {
        opened(side, client: client)
        let id = side.id
        side.closeFuture.whenComplete { _ in self.closed(id, client: client) }
    }

    func openUntilClosed(_ channel: any Channel, client: String) { openUntilClosed(TunnelClientSide(channel), client: client) }

    func closed(_ channel: any Channel, client: String) { closed(ObjectIdentifier(channel), client: client) }

    private func closed(_ id: ObjectIdentifier, client: String) {
        state.withLock { state in
            guard state.channels.removeValue(forKey: id) != nil else { return }
            let left = state.perClient[client, default: 1] - 1
            state.perClient[client] = left > 0 ? left : nil
        }
    }

    /// Closes every open tunnel.
    func closeAll() {
        let all = state.withLock { Array($0.channels.values) }
        for side in all { side.close() }
    }
}
