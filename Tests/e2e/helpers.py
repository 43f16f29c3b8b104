"""Config text for the end-to-end tests."""
from conftest import PLUGINS


def config(port, plugins, clusters=None, timeouts=None, allowed_addresses=None, admin_port=None, limits=None,
           policy=None, top=None):
    """`policy`: extra keys of the policy section (`{"watch": "false", "hook_deadline": "10ms"}`);
    `top`: extra top-level keys (`{"event_loop_threads": 1}`). Values are written as they are."""
    lines = [f"{k}: {v}" for k, v in (top or {}).items()]
    lines += [
        "listeners:",
        "  - name: main",
        "    address: 127.0.0.1",
        f"    port: {port}",
    ]
    if admin_port:
        lines += ["admin:", "  address: 127.0.0.1", f"  port: {admin_port}"]
    if clusters:
        lines.append("clusters:")
        for name, endpoint in clusters.items():
            lines += [f"  - name: {name}", f'    endpoints: ["{endpoint}"]', "    connect_timeout: 2s"]
    if timeouts:
        lines.append("timeouts:")
        lines += [f"  {k}: {v}" for k, v in timeouts.items()]
    if limits:
        lines.append("limits:")
        lines += [f"  {k}: {v}" for k, v in limits.items()]
    lines += ["policy:", f"  plugins_dir: {PLUGINS}"]
    lines += [f"  {k}: {v}" for k, v in (policy or {}).items()]
    if allowed_addresses:
        lines.append(f"  allowed_addresses: {allowed_addresses!r}".replace("'", '"'))
    lines.append("  plugins:")
    for plugin in plugins:
        lines += ["    - " + plugin.strip().replace("\n", "\n      ")]
    return "\n".join(lines) + "\n"


def allowlist(*targets, via=None):
    """connect_allowlist allowing any public host on 443 (`allow: ["*"]`, which the plugin requires)
    and exactly these special host:port targets (loopback literals)."""
    quoted = ", ".join(f'"{t}"' for t in targets)
    text = f"name: connect_allowlist\nconfig:\n  allow: [\"*\"]\n  allow_addresses: [{quoted}]"
    if via:
        text += f"\n  via: {via}"
    return text


def router(routes=None, forward=False, forward_ports=(80,), allow_addresses=()):
    text = "name: host_router\nconfig:\n"
    text += f"  forward_absolute: {'true' if forward else 'false'}\n"
    text += f"  forward_ports: [{', '.join(str(p) for p in forward_ports)}]\n"
    text += "  allow_addresses: [" + ", ".join(f'"{a}"' for a in allow_addresses) + "]\n"
    text += "  routes:\n"
    for host, prefix, cluster in routes or []:
        text += f'    - {{ host: "{host}", prefix: "{prefix}", cluster: {cluster} }}\n'
    return text.rstrip("\n")
