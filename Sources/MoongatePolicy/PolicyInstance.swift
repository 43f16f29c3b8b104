import CLuaShims
#if canImport(Glibc)
import Glibc
#endif
import Logging
import LuaKit
import MoongateConfig

/// What policy says about one request head: the decision, who made it, and — when the request
/// goes upstream — the headers to send, with script edits and the sanitization floor applied.
public struct PolicyVerdict: Sendable {
    public let outcome: PolicyOutcome
    /// The headers for the next hop (route, forward, tunnel_via, upgrades); nil otherwise.
    public let upstreamHeaders: [HeaderField]?
    /// The edits scripts made, in order (for `moongate decide` and tests).
    public let edits: [HeaderEdit]
}

/// One generation's plugins loaded into one Lua state, owned by one event loop (or one test).
///
/// Not `Sendable`: create it on the thread that uses it. Every call runs synchronously, on the
/// caller's thread, under the instruction budget and memory cap of the state.
public final class PolicyInstance {
    private struct Slot {
        let plugin: Int
        let ref: Int32
        /// The plugin's hook deadline in nanoseconds.
        let deadline: UInt64
        /// The plugin's index in the spec (names its log lines).
        let logIndex: Int32
        /// This thread's latency histogram of the hook (nil when latencies are not recorded).
        /// Unmanaged, so a slot stays trivial to copy (the registry keeps the histogram alive).
        let histogram: Unmanaged<HookHistogram>?
    }

    /// The id of the generation this instance belongs to.
    public let generationID: Int
    let lua: LuaState
    let plugins: [LoadedPlugin]
    /// The spec it was loaded from.
    let spec: PolicySpec
    private let routeSlots: [Slot]
    private let connectSlots: [Slot]
    private let sanitizeRequestSlots: [Slot]
    private let sanitizeResponseSlots: [Slot]
    private let logSlots: [Slot]
    private let stats: PolicyStats
    private let logger: Logger
    private let scriptLog: ScriptLog
    /// Cluster names seen in decisions, so a route decision reuses one String.
    private var clusterNames: [String] = []
    /// The trace of the request being decided, while it is decided (nil unless it is traced).
    private var trace: PolicyTrace?
    /// How long the last hook call took (read only when it was timed).
    private var lastCallNanoseconds: UInt64 = 0

    /// Loads every plugin of `spec` into a fresh state (module bodies, hooks, `init`, frozen globals).
    /// - Parameters:
    ///   - logger: where faults are logged.
    ///   - scriptLogger: where the lines scripts log (`moongate.log`, `print`) go.
    /// - Throws: ``PolicyLoadError`` naming the plugin, file and line.
    public convenience init(
        spec: PolicySpec, generationID: Int = 0, stats: PolicyStats = PolicyStats(),
        logger: Logger = Logger(label: "moongate.policy"), scriptLogger: Logger = Logger(label: "moongate.script")
    ) throws(PolicyLoadError) {
        let loaded = try Self.loadPlugins(spec, scriptLogger: scriptLogger, keepGoing: false)
        self.init(
            lua: loaded.lua, plugins: loaded.plugins, spec: spec, generationID: generationID, stats: stats, logger: logger,
            scriptLog: loaded.log)
    }

    /// An instance over plugins already loaded into `lua`.
    init(
        lua: LuaState, plugins: [LoadedPlugin], spec: PolicySpec, generationID: Int, stats: PolicyStats, logger: Logger,
        scriptLog: ScriptLog
    ) {
        self.lua = lua
        self.plugins = plugins
        self.spec = spec
        self.generationID = generationID
        self.stats = stats
        self.logger = logger
        self.scriptLog = scriptLog
        let latencies = stats.hookLatencies
        func slots(_ hook: Hook) -> [Slot] {
            plugins.enumerated().compactMap { index, plugin in
                plugin.hooks[hook].map {
                    Slot(
                        plugin: index, ref: $0.rawValue, deadline: plugin.hookDeadline, logIndex: Int32(plugin.index),
                        histogram: latencies.map { Unmanaged.passUnretained($0.histogram(plugin: plugin.name, hook: hook.rawValue)) })
                }
            }
        }
        routeSlots = slots(.route)
        connectSlots = slots(.connect)
        sanitizeRequestSlots = slots(.sanitizeRequest)
        sanitizeResponseSlots = slots(.sanitizeResponse)
        logSlots = slots(.log)
    }

    /// Where the lines scripts log go.
    var scriptLogger: Logger { scriptLog.logger }

    /// Where faults are logged.
    var faultLogger: Logger { logger }

    /// The plugin names in the order they run.
    public var pluginNames: [String] { plugins.map(\.name) }

    /// Bytes allocated by this instance's Lua state.
    public var luaHeapBytes: Int { lua.heapBytes }

    /// Runs a full collection of this instance's Lua heap.
    public func collectGarbage() { lua.collectGarbage() }

    // MARK: - Decisions

    /// Decides a request and prepares its upstream headers. This is the call the proxy makes once
    /// per request head.
    ///
    /// A request that carries a ``PolicyRequest/trace`` gets every hook call, composition step,
    /// edit and the floor's effect recorded there.
    public func evaluate(_ request: PolicyRequest) -> PolicyVerdict {
        RequestStaging.stage(request, into: lua.pointer)
        let traced = request.trace != nil
        if traced { trace = request.trace }
        defer { if traced { trace = nil } }
        let outcome = decideStaged(request)
        switch outcome.decision {
        case .route, .forward, .tunnelVia:
            var headers = request.headers
            var edits: [HeaderEdit] = []
            if let fault = runSanitize(sanitizeRequestSlots, hook: .sanitizeRequest, kind: Int32(MOON_HOOK_SANITIZE_REQUEST), into: &edits) {
                trace?.step("sanitize_request: fault in plugin \(fault.plugin) overrides '\(outcome.decision.summary)': 500")
                return PolicyVerdict(outcome: PolicyOutcome(decision: .fault(fault), plugin: fault.plugin), upstreamHeaders: nil, edits: edits)
            }
            let kept: Set<String> = request.upgrade != nil ? ["connection", "upgrade"] : []
            SanitizationFloor.apply(edits, to: &headers, keeping: kept)
            if let trace { trace.sanitized(edits: edits, floorRemoved: Self.floorRemoved(request.headers, edits, headers)) }
            return PolicyVerdict(outcome: outcome, upstreamHeaders: headers, edits: edits)
        default:
            return PolicyVerdict(outcome: outcome, upstreamHeaders: nil, edits: [])
        }
    }

    /// The decision alone (composition of `connect` or `route` hooks, with the defaults).
    public func decide(_ request: PolicyRequest) -> PolicyOutcome {
        RequestStaging.stage(request, into: lua.pointer)
        let traced = request.trace != nil
        if traced { trace = request.trace }
        defer { if traced { trace = nil } }
        return decideStaged(request)
    }

    /// The names of fields the scripts' edits left in but the floor took out (traces only).
    private static func floorRemoved(_ original: [HeaderField], _ edits: [HeaderEdit], _ final: [HeaderField]) -> [String] {
        var edited = original
        for edit in edits { edit.apply(to: &edited) }
        var remaining = final
        var removed: [String] = []
        for field in edited {
            if let i = remaining.firstIndex(where: { $0.name == field.name && $0.value == field.value }) {
                remaining.remove(at: i)
            } else {
                removed.append(field.name.asciiLowercased)
            }
        }
        return removed
    }

    private func decideStaged(_ request: PolicyRequest) -> PolicyOutcome {
        guard request.isTunnelRequest else { return routeStaged() }
        var allowed: PolicyOutcome? = nil
        for slot in connectSlots {
            let outcome = call(slot, hook: .connect)
            switch outcome.decision {
            case .noOpinion:
                continue
            case .tunnel, .tunnelVia:
                if allowed == nil { allowed = outcome }
            case .route, .forward:
                return invalidVerb(outcome, slot: slot, hook: .connect, allowed: "tunnel, tunnel_via, deny, respond or nil")
            case .fault:
                return outcome  // the call's own step says it fails closed
            case .deny, .respond:
                trace?.step("connect: \(outcome.decision.verb) from plugin \(outcome.plugin ?? "?") wins over any tunnel; later hooks not called")
                return outcome
            }
        }
        guard let allowed else {
            let reason = request.isByteStreamConnect
                ? "CONNECT is not enabled for this target" : "upgrade to \(request.upgrade ?? "?") is not enabled"
            trace?.step("connect: no plugin enabled it; default deny 403 (\(reason))")
            return PolicyOutcome(decision: .deny(status: 403, reason: reason, headers: []), plugin: nil)
        }
        if request.isByteStreamConnect {
            trace?.step("connect: no deny; the first tunnel wins: \(allowed.decision.summary) from plugin \(allowed.plugin ?? "?")")
            return allowed
        }
        // An upgrade (or extended CONNECT) that policy enables still needs a route.
        trace?.step("connect: upgrade enabled by plugin \(allowed.plugin ?? "?"); route hooks decide where it goes")
        return routeStaged()
    }

    private func routeStaged() -> PolicyOutcome {
        for slot in routeSlots {
            let outcome = call(slot, hook: .route)
            switch outcome.decision {
            case .noOpinion: continue
            case .tunnel, .tunnelVia:
                return invalidVerb(outcome, slot: slot, hook: .route, allowed: "route, forward, deny, respond or nil")
            case .fault:
                return outcome  // the call's own step says it fails closed
            default:
                trace?.step("route: the first answer wins: \(outcome.decision.summary) from plugin \(outcome.plugin ?? "?"); later hooks not called")
                return outcome
            }
        }
        trace?.step("route: no plugin answered; default deny 404")
        return PolicyOutcome(decision: .deny(status: 404, reason: "no route for this request", headers: []), plugin: nil)
    }

    private func invalidVerb(_ outcome: PolicyOutcome, slot: Slot, hook: Hook, allowed: String) -> PolicyOutcome {
        let plugin = plugins[slot.plugin]
        let fault = PolicyFault(
            plugin: plugin.name, hook: hook.rawValue, kind: .invalidReturn,
            message: "\(plugin.path): \(hook.rawValue) returned '\(outcome.decision.verb)'; it may return \(allowed)")
        record(fault)
        trace?.step("\(hook.rawValue): invalid return from plugin \(plugin.name) is a fault: 500")
        return PolicyOutcome(decision: .fault(fault), plugin: plugin.name)
    }

    /// Calls one hook under its plugin's index and deadline, then logs what the call logged (also
    /// when it faulted). The decision's strings stay valid until `moon_call_end`.
    /// When the hook's latency is recorded, or the request is traced, the call is timed (two clock
    /// reads); otherwise no clock is read.
    private func invoke(_ slot: Slot, kind: Int32, _ raw: inout moon_decision) -> Int32 {
        let L = lua.pointer
        moon_set_plugin(L, slot.logIndex)
        let timed = slot.histogram != nil || trace != nil
        let start = timed ? monotonicNanoseconds() : 0
        let status = moon_call_hook_within(L, slot.ref, kind, slot.deadline, &raw)
        if timed {
            let elapsed = monotonicNanoseconds() &- start
            slot.histogram?.takeUnretainedValue().record(elapsed)
            lastCallNanoseconds = elapsed
        }
        scriptLog.drain(L)
        return status
    }

    /// Records one call in the request's trace.
    private func traceCall(_ slot: Slot, hook: Hook, answer: String, edits: [HeaderEdit] = []) {
        trace?.add(
            PolicyTrace.Call(plugin: plugins[slot.plugin].name, hook: hook.rawValue, answer: answer, nanoseconds: lastCallNanoseconds, edits: edits))
    }

    /// Calls one plugin's hook on the staged request and reads its decision.
    private func call(_ slot: Slot, hook: Hook) -> PolicyOutcome {
        let L = lua.pointer
        moon_edits_clear(L)
        var raw = moon_decision()
        let status = invoke(slot, kind: Int32(MOON_HOOK_DECIDE), &raw)
        let plugin = plugins[slot.plugin].name
        guard status == 0 else {
            let fault = makeFault(status: status, plugin: plugin, hook: hook)
            if trace != nil {
                traceCall(slot, hook: hook, answer: "fault \(fault.kind): \(fault.message)")
                trace?.step("\(hook.rawValue): fault in plugin \(plugin) fails the request closed: 500")
            }
            return PolicyOutcome(decision: .fault(fault), plugin: plugin)
        }
        defer { moon_call_end(L) }
        let decision: Decision
        switch Int(raw.verb) {
        case Int(MOON_VERB_NONE): decision = .noOpinion
        case Int(MOON_VERB_ROUTE): decision = .route(cluster: internCluster(raw.arg, raw.arg_len))
        case Int(MOON_VERB_FORWARD): decision = .forward
        case Int(MOON_VERB_TUNNEL): decision = .tunnel
        case Int(MOON_VERB_TUNNEL_VIA): decision = .tunnelVia(cluster: internCluster(raw.arg, raw.arg_len))
        case Int(MOON_VERB_DENY):
            decision = .deny(status: Int(raw.status), reason: string(raw.arg, raw.arg_len), headers: decisionHeaders())
        default:
            decision = .respond(status: Int(raw.status), body: string(raw.arg, raw.arg_len), headers: decisionHeaders())
        }
        if trace != nil {
            var headers: [HeaderEdit] = []
            switch decision {
            case .deny(_, _, let extra), .respond(_, _, let extra): headers = extra.map { HeaderEdit(.set, $0.name, $0.value) }
            default: break
            }
            traceCall(slot, hook: hook, answer: decision == .noOpinion ? "nil" : decision.summary, edits: headers)
        }
        var outcome = PolicyOutcome(decision: decision, plugin: plugin)
        if raw.tls != 0 {
            outcome.tunnelTLS = TunnelTLSRequest(serverName: string(raw.tls_sni, raw.tls_sni_len)?.lowercased(), verify: raw.tls_verify != 0)
        }
        return outcome
    }

    private func makeFault(status: Int32, plugin: String, hook: Hook) -> PolicyFault {
        let message = String(cString: moon_last_error(lua.pointer))
        let kind = LuaError.Kind(status: status) ?? .runtime
        let fault = PolicyFault(plugin: plugin, hook: hook.rawValue, kind: kind, message: message)
        record(fault)
        return fault
    }

    private func record(_ fault: PolicyFault) {
        stats.record(fault)
        logger.error(
            "policy script fault; the request fails closed with 500",
            metadata: [
                "plugin": "\(fault.plugin)", "hook": "\(fault.hook)", "kind": "\(fault.kind)",
                "error": "\(fault.message)", "generation": "\(generationID)",
            ])
    }

    private func string(_ p: UnsafePointer<CChar>?, _ len: Int) -> String? {
        guard let p else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }

    /// The cluster name a decision named, as one of the strings already made for it: a route
    /// decision makes no string. Compared with `memcmp`: the generic comparison of the UTF-8 view
    /// it replaces cost 370 instructions per decision (callgrind, `moongate-policy-bench`).
    private func internCluster(_ p: UnsafePointer<CChar>?, _ len: Int) -> String {
        guard let p else { return "" }
        for name in clusterNames where name.utf8.count == len {
            let same = name.utf8.withContiguousStorageIfAvailable { stored in
                guard let base = stored.baseAddress else { return true }  // both empty
                return memcmp(base, p, len) == 0
            }
            if same == true { return name }
        }
        let bytes = UnsafeRawBufferPointer(start: p, count: len)
        let name = String(decoding: bytes, as: UTF8.self)
        if clusterNames.count < 256 { clusterNames.append(name) }
        return name
    }

    private func decisionHeaders() -> [HeaderField] {
        readEdits().map { HeaderField($0.name, $0.value ?? "") }
    }

    private func readEdits() -> [HeaderEdit] {
        let L = lua.pointer
        let count = Int(moon_edits_count(L))
        guard count > 0 else { return [] }
        var edits: [HeaderEdit] = []
        edits.reserveCapacity(count)
        for i in 0..<count {
            var name: UnsafePointer<CChar>? = nil
            var value: UnsafePointer<CChar>? = nil
            var nlen = 0
            var vlen = 0
            let op = moon_edit_at(L, Int32(i), &name, &nlen, &value, &vlen)
            let operation: HeaderEdit.Operation =
                op == Int32(MOON_EDIT_REMOVE) ? .remove : (op == Int32(MOON_EDIT_SET) ? .set : .append)
            edits.append(HeaderEdit(operation, string(name, nlen) ?? "", string(value, vlen)))
        }
        return edits
    }

    // MARK: - Sanitization and logging

    private func runSanitize(_ slots: [Slot], hook: Hook, kind: Int32, into edits: inout [HeaderEdit]) -> PolicyFault? {
        guard !slots.isEmpty else { return nil }
        let L = lua.pointer
        moon_edits_clear(L)
        for slot in slots {
            var raw = moon_decision()
            let before = trace != nil ? Int(moon_edits_count(L)) : 0
            let status = invoke(slot, kind: kind, &raw)
            guard status == 0 else {
                let fault = makeFault(status: status, plugin: plugins[slot.plugin].name, hook: hook)
                traceCall(slot, hook: hook, answer: "fault \(fault.kind): \(fault.message)")
                return fault
            }
            if trace != nil { traceCall(slot, hook: hook, answer: "ok", edits: Array(readEdits().dropFirst(before))) }
            moon_call_end(L)
        }
        edits = readEdits()
        moon_edits_clear(L)
        return nil
    }

    /// Runs `sanitize_response` hooks and the floor on a response about to go to the client.
    /// - Returns: a fault when a hook failed (the caller answers 500 instead).
    public func sanitizeResponse(
        for request: PolicyRequest, status: Int, headers: inout [HeaderField], keeping kept: Set<String> = []
    ) -> PolicyFault? {
        var edits: [HeaderEdit] = []
        if !sanitizeResponseSlots.isEmpty {
            RequestStaging.stage(request, into: lua.pointer)
            RequestStaging.stageResponse(status: status, headers: headers, into: lua.pointer)
            if let fault = runSanitize(sanitizeResponseSlots, hook: .sanitizeResponse, kind: Int32(MOON_HOOK_SANITIZE_RESPONSE), into: &edits) {
                return fault
            }
        }
        SanitizationFloor.apply(edits, to: &headers, keeping: kept)
        return nil
    }

    /// True when some plugin has a `sanitize_response` hook (otherwise only the floor applies to responses).
    public var hasResponseHooks: Bool { !sanitizeResponseSlots.isEmpty }

    /// True when some plugin has a `log` hook.
    public var hasLogHooks: Bool { !logSlots.isEmpty }

    /// Runs `log` hooks after a request or tunnel ends (faults are counted and logged, nothing else).
    public func log(request: PolicyRequest, status: Int, headers: [HeaderField] = []) {
        guard !logSlots.isEmpty else { return }
        RequestStaging.stage(request, into: lua.pointer)
        RequestStaging.stageResponse(status: status, headers: headers, into: lua.pointer)
        let L = lua.pointer
        for slot in logSlots {
            var raw = moon_decision()
            let result = invoke(slot, kind: Int32(MOON_HOOK_LOG), &raw)
            if result != 0 {
                _ = makeFault(status: result, plugin: plugins[slot.plugin].name, hook: .log)
            } else {
                moon_call_end(L)
            }
        }
    }

    // MARK: - Single-plugin calls (plugin tests)

    /// The raw answer of one plugin's hook, without composition or defaults.
    func callSingle(plugin index: Int, hook: Hook, request: PolicyRequest) -> (PolicyOutcome, [HeaderEdit]) {
        RequestStaging.stage(request, into: lua.pointer)
        guard let ref = plugins[index].hooks[hook] else {
            return (PolicyOutcome(decision: .noOpinion, plugin: plugins[index].name), [])
        }
        let slot = Slot(
            plugin: index, ref: ref.rawValue, deadline: plugins[index].hookDeadline, logIndex: Int32(plugins[index].index), histogram: nil)
        switch hook {
        case .sanitizeRequest, .sanitizeResponse:
            var edits: [HeaderEdit] = []
            let kind = hook == .sanitizeRequest ? MOON_HOOK_SANITIZE_REQUEST : MOON_HOOK_SANITIZE_RESPONSE
            if let fault = runSanitize([slot], hook: hook, kind: Int32(kind), into: &edits) {
                return (PolicyOutcome(decision: .fault(fault), plugin: fault.plugin), [])
            }
            return (PolicyOutcome(decision: .noOpinion, plugin: plugins[index].name), edits)
        default:
            return (call(slot, hook: hook), [])
        }
    }
}
