import MoongateConfig
import MoongatePolicy
import MoongateTesting

/// The repository root, found from this file's path.
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/MoongatePolicyTests/Support.swift
    return parts.joined(separator: "/")
}()

/// A harness over inline plugins, in the order given.
func harness(_ scripts: [(name: String, source: String)], configs: [ConfigValue]? = nil, budget: Int = 1_000_000, cap: Int = 16 << 20,
    deadline: Duration = .milliseconds(10)
) throws -> ScriptHarness {
    let plugins = scripts.enumerated().map { index, script in
        PluginSource(
            name: script.name, path: "inline/\(script.name).lua", source: script.source, priority: index,
            config: configs?[index] ?? .table([]))
    }
    return try ScriptHarness(spec: PolicySpec(plugins: plugins, memoryCap: cap, instructionBudget: budget, hookDeadline: deadline))
}

func request(_ line: String, _ headers: [HeaderField] = [], client: String = "192.0.2.10") throws -> PolicyRequest {
    try PolicyRequest.parse(line: line, headers: headers, client: ClientInfo(ip: client, port: 50000))
}
