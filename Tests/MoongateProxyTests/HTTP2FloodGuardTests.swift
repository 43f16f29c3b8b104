@testable import MoongateProxy
import NIOHTTP2
import Testing

/// The WINDOW_UPDATE credit of ``HTTP2FloodGuard`` and which library errors end a connection.
@Suite("HTTP/2 flood guard")
struct HTTP2FloodGuardTests {
    @Test("WINDOW_UPDATEs beyond the starting credit trip the guard once")
    func windowUpdateFlood() {
        let guardian = HTTP2FloodGuard()
        var trips: [String] = []
        guardian.onFlood = { trips.append($0) }
        for _ in 0..<HTTP2FloodGuard.initialCredit { guardian.windowUpdateReceived() }
        #expect(trips.isEmpty)
        guardian.windowUpdateReceived()
        guardian.windowUpdateReceived()
        #expect(trips == ["WINDOW_UPDATE flood"])
        #expect(guardian.tripped)
    }

    @Test("DATA sent and streams opened earn credit back")
    func earnedCredit() {
        let guardian = HTTP2FloodGuard()
        var tripped = false
        guardian.onFlood = { _ in tripped = true }
        for _ in 0..<5_000 {
            guardian.sentData()  // a download: each DATA frame may be answered by two updates
            guardian.windowUpdateReceived()
            guardian.windowUpdateReceived()
        }
        for _ in 0..<100 {
            guardian.streamOpened()
            guardian.windowUpdateReceived()
        }
        #expect(!tripped)
    }

    @Test("the library's flood errors end the connection, stream errors do not")
    func connectionErrors() {
        #expect(HTTP2FloodGuard.endsConnection(NIOHTTP2Errors.excessiveRSTFrames()))
        #expect(HTTP2FloodGuard.endsConnection(NIOHTTP2Errors.excessiveContinuationFrames()))
        #expect(HTTP2FloodGuard.endsConnection(NIOHTTP2Errors.excessiveEmptyDataFrames()))
        #expect(!HTTP2FloodGuard.endsConnection(NIOHTTP2Errors.contentLengthViolated()))
        #expect(!HTTP2FloodGuard.endsConnection(NIOHTTP2Errors.noSuchStream(streamID: 3)))
    }
}
