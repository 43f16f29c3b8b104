/// Sent down a client connection's pipeline while Moongate is overloaded: a connection that is
/// idle between keep-alive requests closes; one that is busy, or has not had a request yet, is
/// left alone (its next request is refused with 503 while the overload lasts).
struct OverloadShedEvent: Sendable {}
