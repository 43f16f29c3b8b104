import MoongateConfig

/// Reads the values of a test case or fixture line by kind: a value of the wrong kind is an error
/// naming its key, never a silently ignored field.
struct CaseFields {
    let value: ConfigValue

    init(_ value: ConfigValue) { self.value = value }

    func string(_ key: String) throws(CaseError) -> String? {
        switch value[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        default: throw CaseError("'\(key)' must be a string")
        }
    }

    func bool(_ key: String) throws(CaseError) -> Bool? {
        switch value[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        default: throw CaseError("'\(key)' must be true or false")
        }
    }

    /// A list of strings (an empty Lua table exports as an empty table, which counts as a list).
    func strings(_ key: String) throws(CaseError) -> [String]? {
        switch value[key] {
        case nil, .null?: return nil
        case .table(let pairs)? where pairs.isEmpty: return []
        case .array(let items)?:
            var out: [String] = []
            for item in items {
                guard let s = item.stringValue else { throw CaseError("'\(key)' must be a list of strings") }
                out.append(s)
            }
            return out
        default: throw CaseError("'\(key)' must be a list of strings")
        }
    }

    /// Headers as a table of name = value, or a list of {name, value} pairs.
    func headers(_ key: String) throws(CaseError) -> [HeaderField] {
        switch value[key] {
        case nil, .null?: return []
        case .table(let pairs)?:
            var out: [HeaderField] = []
            for (k, v) in pairs {
                guard let s = v.stringValue else { throw CaseError("\(key): header '\(k)' must be a string") }
                out.append(HeaderField(k, s))
            }
            return out
        case .array(let items)?:
            var out: [HeaderField] = []
            for item in items {
                guard case .array(let pair) = item, pair.count == 2, let n = pair[0].stringValue, let v = pair[1].stringValue else {
                    throw CaseError("\(key) as a list must hold {name, value} pairs")
                }
                out.append(HeaderField(n, v))
            }
            return out
        default:
            throw CaseError("\(key) must be a table of name = value")
        }
    }
}
