import ArgumentParser

/// `moongate serve [--config FILE]`
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy (the default command).")

    @Option(name: .shortAndLong, help: "The config file.")
    var config: String = "configs/default.yaml"

    func run() async throws {
        throw ValidationError("serve is not built yet")
    }
}
