#if canImport(Glibc)
import Glibc
#endif
import MoongateFuzzing

/// `moongate-api-fuzz [--cases N] [--seed S] [--plugin FILE] [--max-heap-growth BYTES]`: runs the API
/// fuzzer (see `APIFuzzer`) and exits 1 when the Lua heap grew across the run. Built with
/// `--sanitize=address` by `scripts/fuzz-api`, so a memory error in the C shims ends the run with a
/// report instead of passing silently.
@main
struct APIFuzzMain {
    static func main() throws {
        var cases = 2000
        var seed = 1
        var plugin = "Tests/fuzz/api_fuzz.lua"
        var maxGrowth = 64 * 1024
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let flag = arguments.next() {
            guard let value = arguments.next() else { fail("\(flag) needs a value") }
            switch flag {
            case "--cases": cases = Int(value) ?? cases
            case "--seed": seed = Int(value) ?? seed
            case "--plugin": plugin = value
            case "--max-heap-growth": maxGrowth = Int(value) ?? maxGrowth
            default: fail("unknown flag \(flag) (--cases, --seed, --plugin, --max-heap-growth)")
            }
        }
        let fuzzer = try APIFuzzer(pluginPath: plugin)
        let report = try fuzzer.run(cases: cases, seed: seed) { progress in
            print("… \(progress.cases) cases")
        }
        print(report)
        if report.heapGrowth > maxGrowth {
            fail("the Lua heap grew by \(report.heapGrowth) bytes across the run (limit \(maxGrowth))")
        }
    }

    static func fail(_ message: String) -> Never {
        print("moongate-api-fuzz: \(message)")
        exit(1)
    }
}
