import NIOCore

/// The timers of one HTTP/2 client connection's streams: one repeating task per connection that
/// checks each open stream's deadlines (`timeouts.stream_idle`, `timeouts.upstream_response`),
/// instead of two timers scheduled and cancelled per stream. A stream's deadline is met within one
/// `period` of passing; the task stops itself once the connection has no open streams.
final class HTTP2StreamClock {
    /// A quarter of the shortest timeout it serves, between 10 ms and 1 s.
    let period: TimeAmount
    private let eventLoop: any EventLoop
    private var streams: [HTTP2StreamHandler] = []
    private var task: RepeatedTask?

    init(shortestTimeout: TimeAmount, eventLoop: any EventLoop) {
        let quarter = shortestTimeout.nanoseconds / 4
        period = .nanoseconds(min(max(quarter, 10_000_000), 1_000_000_000))
        self.eventLoop = eventLoop
    }

    func add(_ stream: HTTP2StreamHandler) {
        guard stream.clockSlot == nil else { return }
        stream.clockSlot = streams.count
        streams.append(stream)
        if task == nil { start() }
    }

    func remove(_ stream: HTTP2StreamHandler) {
        guard let slot = stream.clockSlot else { return }
        stream.clockSlot = nil
        let last = streams.removeLast()
        if slot < streams.count {
            streams[slot] = last
            last.clockSlot = slot
        }
    }

    private func start() {
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        task = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in bound.value.tick() }
    }

    private func tick() {
        guard !streams.isEmpty else {
            task?.cancel()
            task = nil
            return
        }
        let now = NIODeadline.now()
        // A stream that times out removes itself from `streams`: walk a copy.
        for stream in streams { stream.clockTick(now: now) }
    }
}
