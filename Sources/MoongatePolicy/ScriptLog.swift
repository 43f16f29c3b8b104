import CLuaShims
import Logging

/// Hands the lines scripts logged (`moongate.log`, `print`) to swift-log. The C shims queue each line
/// during the call (checked, bounded and rate-limited there); this drains the queue once the call has
/// returned, whether it decided or faulted, so no Swift code runs while Lua can raise.
struct ScriptLog {
    /// Where the lines go (label `moongate.script`).
    let logger: Logger
    /// The plugins of the spec, by the index their calls run under (`moon_set_plugin`).
    let plugins: [PluginSource]

    /// Logs and clears every line queued on `state`.
    func drain(_ state: OpaquePointer) {
        let count = Int(moon_log_count(state))
        guard count > 0 else { return }
        defer { moon_log_clear(state) }
        for index in 0..<count {
            var entry = moon_log_entry()
            moon_log_entry_at(state, Int32(index), &entry)
            logger.log(
                level: Self.level(entry.level), "\(Self.text(entry.message, entry.message_len))",
                metadata: metadata(of: entry, at: index, in: state))
        }
    }

    private func metadata(of entry: moon_log_entry, at index: Int, in state: OpaquePointer) -> Logger.Metadata {
        var metadata: Logger.Metadata = [:]
        for f in 0..<Int(entry.field_count) {
            var key: UnsafePointer<CChar>? = nil
            var value: UnsafePointer<CChar>? = nil
            var klen = 0
            var vlen = 0
            let kind = moon_log_field_at(state, Int32(index), Int32(f), &key, &klen, &value, &vlen)
            let text = Self.text(value, vlen)
            metadata[Self.text(key, klen)] = Self.value(text, kind: kind)
        }
        let plugin = Int(entry.plugin)
        let chunk = Self.text(entry.file, entry.file_len)
        if plugins.indices.contains(plugin) {
            let source = plugins[plugin]
            metadata["plugin"] = .string(source.name)
            metadata["file"] = .string(chunk == source.chunkName ? source.path : chunk)
        } else {
            metadata["file"] = .string(chunk)
        }
        metadata["line"] = .stringConvertible(Int(entry.line))
        if entry.dropped > 0 { metadata["dropped"] = .stringConvertible(Int(entry.dropped)) }
        if entry.truncated != 0 { metadata["truncated"] = .stringConvertible(true) }
        return metadata
    }

    private static func value(_ text: String, kind: Int32) -> Logger.MetadataValue {
        switch kind {
        case Int32(MOON_FIELD_INTEGER): Int(text).map { .stringConvertible($0) } ?? .string(text)
        case Int32(MOON_FIELD_NUMBER): Double(text).map { .stringConvertible($0) } ?? .string(text)
        case Int32(MOON_FIELD_BOOLEAN): .stringConvertible(text == "true")
        default: .string(text)
        }
    }

    private static func level(_ level: Int32) -> Logger.Level {
        switch level {
        case Int32(MOON_LOG_DEBUG): .debug
        case Int32(MOON_LOG_INFO): .info
        case Int32(MOON_LOG_NOTICE): .notice
        case Int32(MOON_LOG_WARNING): .warning
        default: .error
        }
    }

    private static func text(_ bytes: UnsafePointer<CChar>?, _ count: Int) -> String {
        guard let bytes, count > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: count), as: UTF8.self)
    }
}
