import ArgumentParser
import MoongateConfig
import MoongatePolicy

#if canImport(Glibc)
import Glibc
#endif

/// Writes a line to standard error.
func printError(_ text: String) {
    let line = text + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// `moongate validate --config FILE`: config, scripts and their tests, like `nginx -t`.
struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config file, its scripts and their tests (exit 0 when all is well, 1 otherwise).")

    @Option(name: .shortAndLong, help: "The config file.")
    var config: String = "configs/default.yaml"

    @Flag(name: .shortAndLong, help: "List every test case.")
    var verbose = false

    func run() throws {
        do {
            let loaded = try ConfigLoader.load(path: config)
            let spec = try PolicySpec.read(loaded.policy)
            let generation = try PolicyGeneration.load(spec, id: 1)
            if verbose { for result in generation.testResults { print(result) } }
            let plugins = spec.plugins.map(\.name).joined(separator: ", ")
            print("\(config): configuration OK: \(spec.plugins.count) plugins (\(plugins)), \(generation.testResults.count) tests passed")
        } catch let error as ConfigError {
            printError("\(error)")
            printError("\(config): configuration test failed")
            throw ExitCode.failure
        } catch let error as PolicyLoadError {
            printError("\(error)")
            printError("\(config): configuration test failed")
            throw ExitCode.failure
        }
    }
}
