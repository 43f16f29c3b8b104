import Logging
import MoongateConfig
import NIOCore
import Synchronization

/// The open tunnels (for the tunnel caps, the open-tunnels gauge and graceful shutdown), in total
/// and per client address. Locked only when a tunnel is asked for, opens or closes, never per byte.
final class TunnelRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
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

    /// Counts a tunnel (once per channel, however often it is called).
    func opened(_ channel: any Channel, client: String) {
        state.withLock { state in
            guard state.channels.updateValue(channel, forKey: ObjectIdentifier(channel)) == nil else { return }
            state.perClient[client, default: 0] += 1
        }
    }

    /// Counts a tunnel from now until its client channel closes. Handlers call it before the
    /// tunnel's 2xx goes out: a CONNECT the client sends as soon as it reads that answer must find
    /// this one counted, whichever loop takes it (the caps of hardening §C.12).
    func openUntilClosed(_ channel: any Channel, client: String) {
        opened(channel, client: client)
        channel.closeFuture.whenComplete { _ in self.closed(channel, client: client) }
    }

    func closed(_ channel: any Channel, client: String) {
        state.withLock { state in
            guard state.channels.removeValue(forKey: ObjectIdentifier(channel)) != nil else { return }
            let left = state.perClient[client, default: 1] - 1
            state.perClient[client] = left > 0 ? left : nil
        }
    }

    /// Closes every open tunnel.
    func closeAll() {
        let all = state.withLock { Array($0.channels.values) }
        for channel in all { channel.close(promise: nil) }
    }
}
