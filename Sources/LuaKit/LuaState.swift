import CLuaShims

/// A reference to a Lua value held in the registry of one ``LuaState``.
public struct LuaRef: Hashable, Sendable {
    /// The registry index.
    public let rawValue: Int32
    /// Wraps a registry index.
    public init(rawValue: Int32) { self.rawValue = rawValue }
}

/// One sandboxed Lua 5.4 state, confined to the thread (event loop) that created it.
///
/// The state has a capped allocator (`memoryCap` bytes; going over is a Lua error, never a crash),
/// an instruction budget per call, and only the sandboxed globals: `string`, `table`, `math`,
/// `utf8`, the `moongate` host module and safe base functions. Binary chunks never load.
/// It is deliberately not `Sendable`: create it on the loop that uses it.
public final class LuaState {
    /// The underlying state, for the policy layer's hot-path calls into the C shims.
    package let pointer: OpaquePointer

    /// Creates a state.
    /// - Parameters:
    ///   - memoryCap: bytes the state may allocate (default 16 MiB).
    ///   - instructionBudget: VM instructions allowed per call (default 1,000,000).
    public init(memoryCap: Int = 16 << 20, instructionBudget: Int = 1_000_000) throws(LuaError) {
        guard let state = moon_newstate(memoryCap) else {
            throw LuaError(kind: .memory, message: "could not create a Lua state")
        }
        self.pointer = state
        moon_set_budget(state, Int32(clamping: instructionBudget))
    }

    deinit { moon_close(pointer) }

    /// Instructions allowed per call.
    public func setInstructionBudget(_ instructions: Int) {
        moon_set_budget(pointer, Int32(clamping: instructions))
    }

    /// Time limits (nil = none): `hook` for each hook call, `load` for module bodies, `init` and other
    /// calls made while loading. A call past its limit, in Lua or in a library function, fails with
    /// ``LuaError/Kind/deadline``.
    public func setDeadlines(hook: Duration?, load: Duration?) {
        moon_set_deadlines(pointer, Self.nanoseconds(hook), Self.nanoseconds(load))
    }

    /// A duration in nanoseconds for the C shims (0 = none).
    package static func nanoseconds(_ duration: Duration?) -> UInt64 {
        guard let duration else { return 0 }
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }

    /// Bytes currently allocated by this state.
    public var heapBytes: Int { Int(moon_heap_bytes(pointer)) }

    /// Runs a full garbage collection.
    public func collectGarbage() { moon_full_gc(pointer) }

    /// Creates a fresh sandboxed environment (the globals one plugin sees).
    public func newEnvironment() throws(LuaError) -> LuaRef {
        var ref: Int32 = -1
        try check(moon_new_env(pointer, &ref))
        return LuaRef(rawValue: ref)
    }

    /// Compiles `source` as text and runs it in `environment`.
    /// - Parameters:
    ///   - source: Lua source text (bytecode is refused).
    ///   - chunkName: the name errors carry, `@path` for a file.
    ///   - environment: the environment from ``newEnvironment()``.
    /// - Returns: a reference to the first value the chunk returned, or `nil` when it returned nil.
    @discardableResult
    public func run(_ source: String, chunkName: String, in environment: LuaRef) throws(LuaError) -> LuaRef? {
        var ref: Int32 = -1
        var text = source
        let status = text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                moon_run_chunk(pointer, environment.rawValue, chars.baseAddress, chars.count, chunkName, &ref)
            }
        }
        try check(status)
        return ref >= 0 ? LuaRef(rawValue: ref) : nil
    }

    /// The function stored under `name` in the table `table`, or `nil` when there is none.
    /// A value that is not a function is an error naming the field.
    public func function(named name: String, in table: LuaRef) throws(LuaError) -> LuaRef? {
        var ref: Int32 = -1
        try check(moon_get_function(pointer, table.rawValue, name, &ref))
        return ref >= 0 ? LuaRef(rawValue: ref) : nil
    }

    /// The value stored under `name` in the table `table`, or `nil`.
    public func field(named name: String, in table: LuaRef) throws(LuaError) -> LuaRef? {
        var ref: Int32 = -1
        try check(moon_get_field(pointer, table.rawValue, name, &ref))
        return ref >= 0 ? LuaRef(rawValue: ref) : nil
    }

    /// Calls `function` with one optional argument under the instruction budget.
    public func call(_ function: LuaRef, with argument: LuaRef? = nil) throws(LuaError) {
        try check(moon_call_with(pointer, function.rawValue, argument?.rawValue ?? -1))
    }

    /// Makes an environment read-only: a later write to a global is an error naming the line.
    public func freeze(_ environment: LuaRef) throws(LuaError) {
        try check(moon_freeze_env(pointer, environment.rawValue))
    }

    /// The value as JSON text (tables, strings, numbers, booleans; functions become a marker).
    public func exportJSON(_ value: LuaRef) throws(LuaError) -> String {
        var out: UnsafeMutablePointer<CChar>? = nil
        var length = 0
        try check(moon_export_json(pointer, value.rawValue, &out, &length))
        defer { moon_free(out) }
        guard let out else { return "null" }
        return String(decoding: UnsafeRawBufferPointer(start: out, count: length), as: UTF8.self)
    }

    /// Releases a reference.
    public func release(_ ref: LuaRef) { moon_unref(pointer, ref.rawValue) }

    /// Throws the state's last error for a non-zero status.
    package func check(_ status: Int32) throws(LuaError) {
        guard status != 0 else { return }
        let kind = LuaError.Kind(status: status) ?? .runtime
        throw LuaError(kind: kind, message: String(cString: moon_last_error(pointer)))
    }
}
