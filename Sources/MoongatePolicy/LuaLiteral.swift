import MoongateConfig

/// Renders a ``ConfigValue`` as Lua source (`return { … }`), so a plugin's config reaches Lua through
/// the protected loader instead of unprotected C API pushes.
enum LuaLiteral {
    static func chunk(for value: ConfigValue) -> String { "return " + render(value) }

    static func render(_ value: ConfigValue) -> String {
        switch value {
        case .null: return "nil"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? "\(d)" : "0"
        case .string(let s): return quote(s)
        case .array(let items): return "{" + items.map(render).joined(separator: ", ") + "}"
        case .table(let pairs):
            return "{" + pairs.map { "[\(quote($0.key))] = \(render($0.value))" }.joined(separator: ", ") + "}"
        }
    }

    /// A Lua string literal; every byte that is not printable ASCII becomes a decimal escape.
    static func quote(_ s: String) -> String {
        var out = "\""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += "\\\""
            case UInt8(ascii: "\\"): out += "\\\\"
            case 0x20...0x7e: out.unicodeScalars.append(Unicode.Scalar(byte))
            default: out += "\\" + String(format3(byte))
            }
        }
        return out + "\""
    }

    private static func format3(_ byte: UInt8) -> String {
        let s = String(byte)
        return String(repeating: "0", count: 3 - s.count) + s
    }
}
