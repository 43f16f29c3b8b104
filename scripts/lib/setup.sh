# Shared set-up for scripts/run, scripts/test and scripts/bench: installs what a fresh Debian
# machine lacks (as root, with apt-get), once.
set -euo pipefail

# ensure_packages CMD:PKG ... — installs PKG when CMD (or, for paths, the file) is missing.
ensure_packages() {
    local need=() pair probe pkg
    for pair in "$@"; do
        probe=${pair%%:*}
        pkg=${pair#*:}
        if [[ $probe == /* ]]; then
            [ -e "$probe" ] || need+=("$pkg")
        else
            command -v "$probe" >/dev/null 2>&1 || need+=("$pkg")
        fi
    done
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing packages: ${need[*]} (install them, or run as root)" >&2
        return 1
    fi
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
}

# The build needs Debian's Lua 5.4 and pkg-config's .pc file for it, and RE2 (moongate.regex).
ensure_build_deps() {
    ensure_packages /usr/include/lua5.4/lua.h:liblua5.4-dev pkg-config:pkg-config /usr/include/re2/re2.h:libre2-dev /usr/include/crypt.h:libcrypt-dev
}

# Release builds of the proxy turn dynamic exclusivity checks off in every module, SwiftNIO's
# included: on the request path they cost about 5% of the CPU per request (perf record, P1:
# swift_beginAccess / AccessSet::insert under ByteBuffer writes and the HTTP decoder; measured
# 24.4 → 23.0 µs per request). Debug and test builds keep the checks, so the suite still traps any
# overlapping access. Every release build goes through here, so `.build/release` is built one way.
release_build() {
    swift build -c release -Xswiftc -enforce-exclusivity=unchecked "$@"
}
