/// The keys the loader accepts in each section of a config file: what `docs/config.md` documents,
/// section by section. A test holds all three together: it asks the loader for the keys each
/// section accepts (the "known keys" of its unknown-key error) and compares them with this list
/// and with the reference's tables. A key added to the loader is one more string here and one more
/// row in the reference.
public enum ConfigKeys {
    /// Each section's path (`.` is the top level, `[]` an entry of a list) and its keys.
    public static let sections: [(section: String, keys: [String])] = [
        (".", ["listeners", "clusters", "policy", "admin", "limits", "timeouts", "event_loop_threads", "overload", "resolver",
            "tunnel_tls", "http2"]),
        ("listeners[]", ["name", "address", "port", "protocols", "tls"]),
        ("clusters[]", ["name", "endpoints", "connect_timeout", "pool_size", "protocol", "tls", "via"]),
        ("policy", [
            "plugins", "plugins_dir", "memory_cap", "instruction_budget", "watch", "fixtures", "allowed_addresses",
            "hook_deadline", "init_deadline",
        ]),
        ("policy.plugins[]", ["name", "file", "priority", "config", "hook_deadline"]),
        ("admin", ["address", "port"]),
        ("limits", [
            "max_header_bytes", "max_header_count", "max_request_line_bytes", "max_header_field_bytes", "max_connections",
            "max_tunnels", "max_tunnels_per_client",
        ]),
        ("timeouts", [
            "request_headers", "stream_idle", "upstream_connect", "upstream_response", "tunnel_idle", "tunnel_max_duration",
            "drain", "request_body_idle", "request_body", "keepalive_idle", "response_write_idle",
            "tls_handshake",
        ]),
        ("overload", ["max_connections", "max_buffered_bytes", "max_memory", "check_interval", "retry_after", "recover_ratio"]),
        ("resolver", ["threads", "cache_ttl", "cache_size", "hosts"]),
        ("http2", [
            "max_concurrent_streams", "initial_stream_window", "initial_connection_window", "max_frame_size",
            "max_header_list_size", "extended_connect",
        ]),
    ]

    /// The keys of `section`, or nil for a section this list does not know.
    public static func keys(of section: String) -> [String]? {
        sections.first { $0.section == section }?.keys
    }
}
