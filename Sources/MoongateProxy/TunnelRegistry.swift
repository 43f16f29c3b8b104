import Logging
import MoongateConfig
import NIOCore
import Synchronization

/// The open tunnels (for the tunnel cap, the open-tunnels gauge and graceful shutdown).
/// Locked only when a tunnel opens or closes, never per byte.
final class TunnelRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    var count: Int { channels.withLock { $0.count } }

    func opened(_ channel: any Channel) {
        channels.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func closed(_ channel: any Channel) {
        _ = channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Closes every open tunnel.
    func closeAll() {
        let all = channels.withLock { Array($0.values) }
        for channel in all { channel.close(promise: nil) }
    }
}
