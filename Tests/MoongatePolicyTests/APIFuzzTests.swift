import MoongateFuzzing
import Testing

/// A short run of the API fuzzer in every test run (scripts/fuzz-api runs long ones under
/// AddressSanitizer): thousands of random calls of every reachable function and method, in every
/// hook, end in decisions or faults, and the Lua heap does not grow across requests.
@Suite("API fuzzing")
struct APIFuzzTests {
    @Test("3,000 fuzz cases end in decisions or faults in every hook, with no Lua heap growth")
    func shortFuzzRun() throws {
        let fuzzer = try APIFuzzer(pluginPath: "\(repositoryRoot)/Tests/fuzz/api_fuzz.lua")
        let report = try fuzzer.run(cases: 3000, seed: 20261129)
        #expect(report.cases == 3000)
        // The generator reaches every hook and makes it fail in more than one way.
        for hook in ["route", "connect", "sanitize_request", "sanitize_response", "log"] {
            #expect(report.faults.keys.contains { $0.hasPrefix(hook + "/") }, "no fault seen in \(hook)")
        }
        #expect(report.faults.keys.contains { $0.hasSuffix("/runtime") })
        #expect(report.faults.keys.contains { $0.hasSuffix("/invalid_return") })
        #expect(report.heapGrowth < 64 * 1024, "\(report)")
    }
}
