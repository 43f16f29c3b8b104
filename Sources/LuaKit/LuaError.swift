/// An error raised by Lua code or by the sandbox around it.
///
/// The message always carries the chunk name and line where Lua knows them
/// (`plugins/route.lua:12: attempt to index a nil value`).
public struct LuaError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as a small extensible set of kinds.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Code: Hashable, Sendable { case syntax, runtime, budget, memory, invalidReturn, deadline }
        private let code: Code

        /// The chunk did not compile.
        public static let syntax = Kind(code: .syntax)
        /// A Lua error was raised while running.
        public static let runtime = Kind(code: .runtime)
        /// The instruction budget ran out (a runaway loop).
        public static let budget = Kind(code: .budget)
        /// The memory cap of the state was reached.
        public static let memory = Kind(code: .memory)
        /// A hook returned a value the host does not accept.
        public static let invalidReturn = Kind(code: .invalidReturn)
        /// The call ran past its deadline (a runaway pattern or any other long library call).
        public static let deadline = Kind(code: .deadline)

        public var description: String {
            switch code {
            case .syntax: "syntax"
            case .runtime: "runtime"
            case .budget: "budget"
            case .memory: "memory"
            case .invalidReturn: "invalid_return"
            case .deadline: "deadline"
            }
        }

        package init?(status: Int32) {
            switch status {
            case 1: self.code = .syntax
            case 2: self.code = .runtime
            case 3: self.code = .budget
            case 4: self.code = .memory
            case 5: self.code = .invalidReturn
            case 6: self.code = .deadline
            default: return nil
            }
        }

        private init(code: Code) { self.code = code }
    }

    /// The kind of failure.
    public let kind: Kind
    /// Lua's message, with chunk name and line.
    public let message: String

    /// Creates an error of the given kind.
    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
