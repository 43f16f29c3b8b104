import NIOHPACK
import NIOHTTP2

/// Moongate's own flood counter for an HTTP/2 client connection, where swift-nio-http2 keeps none
/// (hardening.md §D): WINDOW_UPDATE frames, which the library does not assess. A client opens its
/// receive windows because Moongate sent it DATA, or when it starts a stream, so each WINDOW_UPDATE
/// spends a credit that DATA frames sent and streams opened earn back; a connection out of credit
/// is flooding and is closed with GOAWAY (ENHANCE_YOUR_CALM). One per connection, shared by its
/// stream handlers on the connection's event loop.
final class HTTP2FloodGuard {
    /// Credits a connection starts with (slack for a client's window tuning).
    static let initialCredit = 1_000
    /// Banked credit is capped, so a long download cannot fund a later flood.
    static let maximumCredit = 100_000

    private var credit = HTTP2FloodGuard.initialCredit
    /// Told when the connection floods (set by ``HTTP2ConnectionHandler``).
    var onFlood: ((_ what: String) -> Void)?
    private(set) var tripped = false

    /// A DATA frame went to the client: its stream window and the connection's may be reopened.
    @inline(__always)
    func sentData() {
        if credit < Self.maximumCredit { credit += 2 }
    }

    /// The client opened a stream: it may size that stream's window.
    func streamOpened() {
        if credit < Self.maximumCredit { credit += 2 }
    }

    /// A WINDOW_UPDATE arrived (on the connection or on a stream).
    func windowUpdateReceived() {
        credit -= 1
        if credit < 0 && !tripped {
            tripped = true
            onFlood?("WINDOW_UPDATE flood")
        }
    }

    /// Whether an error swift-nio-http2 reports ends the connection: its flood guards (after which
    /// it has sent GOAWAY), frames it cannot parse, and HPACK failures (a COMPRESSION_ERROR is a
    /// connection error, RFC 9113 §4.3). Stream errors leave the connection to its other streams.
    static func endsConnection(_ error: any Error) -> Bool {
        switch error {
        case is NIOHTTP2Errors.ExcessiveRSTFrames, is NIOHTTP2Errors.ExcessiveControlFrames,
            is NIOHTTP2Errors.ExcessiveEmptyDataFrames, is NIOHTTP2Errors.ExcessiveContinuationFrames,
            is NIOHTTP2Errors.ExcessiveStreamErrors, is NIOHTTP2Errors.ExcessiveNumberOfGlitches,
            is NIOHTTP2Errors.ExcessiveOutboundFrameBuffering, is NIOHTTP2Errors.ExcessivelyLargeHeaderBlock,
            is NIOHTTP2Errors.UnableToParseFrame, is NIOHTTP2Errors.BadClientMagic, is NIOHTTP2Errors.MissingPreface,
            is any NIOHPACKError:
            return true
        default:
            return false
        }
    }
}
