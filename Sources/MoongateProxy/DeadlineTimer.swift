import NIOCore

/// A timeout re-armed by moving its deadline, not by scheduling: at most one task is scheduled,
/// and it is rescheduled only when it fires before the current deadline, or when the deadline moves
/// before it. Re-arming with deadlines that only move later (keep-alive heads, upstream responses,
/// body reads) thus costs a clock read, no timer-queue work. Confined to its event loop.
///
/// The task is a scheduled callback with the timer itself as its handler: no promise, future or
/// closures are allocated per schedule (a `scheduleTask` made four allocations, once per
/// connection for its first head's deadline).
final class DeadlineTimer: NIOScheduledCallbackHandler {
    private let eventLoop: any EventLoop
    private let onExpiry: () -> Void
    private var task: NIOScheduledCallback?
    /// When the scheduled task runs (meaningful while `task` is set).
    private var scheduledFor = NIODeadline.uptimeNanoseconds(0)
    private var deadline: NIODeadline?

    /// Creates a disarmed timer; `onExpiry` runs on `eventLoop` when an armed deadline passes.
    init(eventLoop: any EventLoop, onExpiry: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.onExpiry = onExpiry
    }

    /// Whether a deadline is set.
    var isArmed: Bool { deadline != nil }

    /// Arms (or re-arms) the timer to expire `amount` from now.
    func arm(in amount: TimeAmount) { arm(at: NIODeadline.now() + amount) }

    /// Arms (or re-arms) the timer to expire at `due`.
    func arm(at due: NIODeadline) {
        deadline = due
        if let scheduled = task {
            guard due < scheduledFor else { return }
            // The deadline moved before the scheduled task (a shorter timeout follows a longer one).
            scheduled.cancel()
        }
        schedule(at: due)
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
        scheduledFor = due
        // Fails only once the loop is shutting down, when no deadline matters any more.
        task = try? eventLoop.assumeIsolated().scheduleCallback(at: due, handler: self)
    }

    /// The scheduled callback ran (``NIOScheduledCallbackHandler``).
    func handleScheduledCallback(eventLoop: some EventLoop) { fire() }

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
