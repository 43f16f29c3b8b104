import MoongatePolicy

/// The JSON line of one traced request, as `/trace` streams it.
enum TraceLine {
    static func json(
        _ record: PolicyTrace.Record, request: PolicyRequest, outcome: PolicyOutcome?, status: Int, reason: RefusalReason?,
        client: ClientInfo, bytesIn: Int, bytesOut: Int, milliseconds: Double
    ) -> String {
        var f: [String] = [
            "\"client\":\(JSON.quote("\(client.ip):\(client.port)"))",
            "\"method\":\(JSON.quote(request.method))",
            "\"target\":\(JSON.quote(AccessLog.target(request.target, authority: request.authority)))",
        ]
        if let host = request.host { f.append("\"host\":\(JSON.quote(host))") }
        if let path = request.path { f.append("\"path\":\(JSON.quote(path))") }
        f.append("\"version\":\(JSON.quote(request.version))")
        f.append("\"decision\":\(JSON.quote(outcome?.decision.summary ?? "-"))")
        f.append("\"plugin\":\(outcome?.plugin.map(JSON.quote) ?? "null")")
        f.append("\"cluster\":\(outcome?.cluster.map(JSON.quote) ?? "null")")
        f.append("\"status\":\(status)")
        f.append("\"reason\":\(reason.map { JSON.quote($0.rawValue) } ?? "null")")
        if case .fault(let fault)? = outcome?.decision {
            f.append("\"fault\":{\"plugin\":\(JSON.quote(fault.plugin)),\"hook\":\(JSON.quote(fault.hook)),\"kind\":\(JSON.quote("\(fault.kind)")),\"message\":\(JSON.quote(fault.message))}")
        }
        let calls = record.calls.map { call in
            "{\"plugin\":\(JSON.quote(call.plugin)),\"hook\":\(JSON.quote(call.hook)),\"answer\":\(JSON.quote(call.answer)),"
                + "\"us\":\(Double(call.nanoseconds / 100) / 10),\"edits\":[\(call.edits.map { JSON.quote($0.description) }.joined(separator: ","))]}"
        }
        f.append("\"calls\":[\(calls.joined(separator: ","))]")
        f.append("\"composition\":[\(record.composition.map(JSON.quote).joined(separator: ","))]")
        f.append("\"edits\":[\(record.edits.map { JSON.quote($0.description) }.joined(separator: ","))]")
        f.append("\"floor_removed\":[\(record.floorRemoved.map(JSON.quote).joined(separator: ","))]")
        for note in record.notes { f.append("\(JSON.quote(note.key)):\(JSON.quote(note.value))") }
        f.append("\"bytes_in\":\(bytesIn)")
        f.append("\"bytes_out\":\(bytesOut)")
        f.append("\"duration_ms\":\(milliseconds)")
        return "{\(f.joined(separator: ","))}"
    }

    /// A request refused before policy saw it.
    static func refused(
        status: Int, reason: RefusalReason, detail: String, client: ClientInfo, method: String?, target: String?
    ) -> String {
        "{\"client\":\(JSON.quote("\(client.ip):\(client.port)")),\"method\":\(method.map(JSON.quote) ?? "null"),"
            + "\"target\":\(target.map(JSON.quote) ?? "null"),\"decision\":\"-\",\"plugin\":null,\"cluster\":null,"
            + "\"status\":\(status),\"reason\":\(JSON.quote(reason.rawValue)),\"detail\":\(JSON.quote(detail)),\"calls\":[]}"
    }

    /// What the address floor did for a request that ended (live traces; `decide` says it exactly).
    static func floorEffect(
        request: PolicyRequest, outcome: PolicyOutcome?, status: Int, reason: RefusalReason?, local: Bool
    ) -> String? {
        guard let outcome else { return nil }
        switch outcome.decision {
        case .route, .tunnelVia:
            return "not applied: a configured cluster's endpoints are the operator's"
        case .forward, .tunnel:
            let host = request.target?.host ?? request.host ?? "?"
            let literal = request.target?.isIPLiteral ?? Authority(host: host, port: request.port ?? 0).isIPLiteral
            if literal { return "not applied: \(host) is an IP literal (policy's call)" }
            if reason == .floor { return "refused: \(host) resolves only to loopback, private or other special addresses (403)" }
            if local && status >= 500 { return "not reached: \(host) could not be resolved or dialled" }
            return "passed: \(host) resolved to a public or allowed address"
        default:
            return nil
        }
    }
}
