import NIOHTTP2

/// The HTTP/2 client connections of one event loop, so that a reload which changes the settings
/// they were opened with can drain them: each gets GOAWAY and closes once its streams are done, and
/// the client's next connection is served with the new settings. Touched only on its loop.
final class HTTP2ConnectionSet {
    private var connections: [ObjectIdentifier: HTTP2ConnectionHandler] = [:]

    func add(_ connection: HTTP2ConnectionHandler) { connections[ObjectIdentifier(connection)] = connection }

    func remove(_ connection: HTTP2ConnectionHandler) { connections[ObjectIdentifier(connection)] = nil }

    /// A reload published `settings`: the connections opened with others drain.
    func settingsChanged(to settings: HTTP2Settings) {
        for connection in connections.values where connection.advertised != settings {
            connection.drain(reason: "HTTP/2 settings changed by a reload")
        }
    }
}
