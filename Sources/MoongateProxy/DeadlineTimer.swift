import NIOCore

/// A timeout re-armed by moving its deadline, not by scheduling: at most one task is scheduled,
/// and it is rescheduled only when it fires before the current deadline. Re-arming per request
/// (keep-alive heads, upstream responses) thus costs a clock read, no timer-queue work.
/// Confined to its event loop.
final class DeadlineTimer {
    private let eventLoop: any EventLoop
    private let onExpiry: () -> Void
    private var task: Scheduled<Void>?
    private var deadline: NIODeadline?

    /// Creates a disarmed timer; `onExpiry` runs on `eventLoop` when an armed deadline passes.
    init(eventLoop: any EventLoop, onExpiry: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.onExpiry = onExpiry
    }

    /// Arms (or re-arms) the timer to expire `amount` from now.
    func arm(in amount: TimeAmount) {
        let due = NIODeadline.now() + amount
        deadline = due
        if task == nil { schedule(at: due) }
    }

    /// Stands the timer down; the scheduled task, if any, stays and finds nothing to do.
    func disarm() { deadline = nil }

    /// Disarms and drops the scheduled task (the connection is going away).
    func cancel() {
        deadline = nil
        task?.cancel()
        task = nil
    }

    /// The task holds the timer strongly until it fires or is cancelled (owners cancel when their
    /// handler leaves its pipeline). Not weakly: a weak reference would give the timer a side
    /// table, and every retain and release of it (several per request) would take the slow path.
    private func schedule(at due: NIODeadline) {
        task = eventLoop.assumeIsolated().scheduleTask(deadline: due) { self.fire() }
    }

    private func fire() {
        task = nil
        guard let due = deadline else { return }
        if due > .now() {
            schedule(at: due)
            return
        }
        deadline = nil
        onExpiry()
    }
}
