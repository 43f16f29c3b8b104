@testable import MoongateProxy
import NIOCore
import NIOPosix
import Testing

/// The lazily re-armed timer behind every HTTP/1.1 deadline: a deadline moved later costs no
/// rescheduling, one moved earlier (a short timeout after a long one) must still fire on time.
@Suite("Deadline timer")
struct DeadlineTimerTests {
    /// Runs `arm` on a fresh loop and waits (at most `limit`) for the timer to fire; returns how long it took.
    private func firing(within limit: TimeAmount, _ arm: @escaping @Sendable (DeadlineTimer) -> Void) async throws -> TimeAmount? {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let fired = loop.makePromise(of: NIODeadline.self)
        let started = NIODeadline.now()
        try await loop.submit {
            let timer = DeadlineTimer(eventLoop: loop) { fired.succeed(.now()) }
            arm(timer)
            loop.assumeIsolated().scheduleTask(in: limit) {
                timer.cancel()
                fired.fail(CancellationError())
            }
        }.get()
        let at = try? await fired.futureResult.get()
        try await group.shutdownGracefully()
        return at.map { $0 - started }
    }

    @Test("a deadline moved before the scheduled one fires at the earlier time")
    func earlierDeadlineFires() async throws {
        let took = try await firing(within: .seconds(5)) { timer in
            timer.arm(in: .seconds(60))
            timer.arm(in: .milliseconds(50))
        }
        let elapsed = try #require(took, "the timer did not fire before the 60 s deadline it replaced")
        #expect(elapsed >= .milliseconds(50))
    }

    @Test("a deadline moved later fires at the later time, not the first")
    func laterDeadlineWins() async throws {
        let took = try await firing(within: .seconds(5)) { timer in
            timer.arm(in: .milliseconds(20))
            timer.arm(in: .milliseconds(300))
        }
        let elapsed = try #require(took)
        #expect(elapsed >= .milliseconds(300))
    }

    @Test("a disarmed timer never fires")
    func disarmedNeverFires() async throws {
        let took = try await firing(within: .milliseconds(300)) { timer in
            timer.arm(in: .milliseconds(20))
            timer.disarm()
        }
        #expect(took == nil)
    }
}
