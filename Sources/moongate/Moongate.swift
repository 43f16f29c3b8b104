import ArgumentParser

/// The `moongate` command: serve, validate, decide, version.
@main
struct Moongate: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "moongate",
        abstract: "An HTTP proxy whose policy is written in Lua.",
        version: version,
        subcommands: [Serve.self, Validate.self, Decide.self, Version.self],
        defaultSubcommand: Serve.self)
}

/// `moongate version`
struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")
    func run() { print("moongate \(Moongate.version)") }
}
