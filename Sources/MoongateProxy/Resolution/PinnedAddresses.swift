import NIOCore
import NIOPosix

/// A NIO `Resolver` that answers with addresses already looked up and checked (the address floor),
/// so `ClientBootstrap.connect(host:port:)` races them by Happy Eyeballs (RFC 8305: IPv6 first,
/// the families interleaved, a new attempt every 250 ms or as soon as one fails) and dials
/// nothing else: no second lookup, no rebinding between the check and the connect.
struct PinnedAddresses: Resolver, Sendable {
    private let v4: [SocketAddress]
    private let v6: [SocketAddress]
    private let eventLoop: any EventLoop

    init(_ addresses: [SocketAddress], on eventLoop: any EventLoop) {
        self.v4 = addresses.filter { $0.protocol == .inet }
        self.v6 = addresses.filter { $0.protocol == .inet6 }
        self.eventLoop = eventLoop
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture(v4)
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        eventLoop.makeSucceededFuture(v6)
    }

    func cancelQueries() {}
}
