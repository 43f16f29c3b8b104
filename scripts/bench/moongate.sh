#!/usr/bin/env bash
# Moongate's adapter for the peer benchmark harness (scripts/bench/run sets BENCH_ADAPTERS=scripts/bench).
# One event-loop thread; a Lua decision per request (host_router) and per CONNECT
# (connect_allowlist), exactly as HAProxy+Lua decides in proxies/haproxy-lua.lua.
source "$BENCH_DIR/lib/adapter.sh"
BIN=${MOONGATE_BIN:?set MOONGATE_BIN to the built moongate binary}
PLUGINS=${MOONGATE_PLUGINS:?set MOONGATE_PLUGINS to the plugins folder}

# MOONGATE_NO_H2=1 leaves HTTP/2 out (a baseline build from before it had it: moongate-base.sh).
# P7/P8 (the TLS listener) are served by builds that know TLS (MOONGATE_NO_TLS=1 leaves them out).
has_tls() { [ -z "${MOONGATE_NO_TLS:-}" ] && grep -qa "tls_handshake" "$BIN"; }

endpoints() {
    echo "P1 http://$BENCH_HOST:$PROXY_H1_PORT"
    [ -n "${MOONGATE_NO_H2:-}" ] || echo "P2 http://$BENCH_HOST:$PROXY_H2C_PORT"
    [ -n "${MOONGATE_NO_H2:-}" ] || echo "P6 h2connect://$BENCH_HOST:$PROXY_H2CONNECT_PORT"
    echo "P3 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    echo "P4 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    echo "P5 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    if has_tls; then
        echo "P7 https://$BENCH_HOST:$PROXY_TLS_PORT"
        echo "P8 https://$BENCH_HOST:$PROXY_TLS_PORT"
    fi
}

start() {
    local h2c="  - { name: h2c, address: $BENCH_HOST, port: $PROXY_H2C_PORT, protocols: [http2] }
  - { name: h2connect, address: $BENCH_HOST, port: $PROXY_H2CONNECT_PORT, protocols: [http2] }"
    [ -z "${MOONGATE_NO_H2:-}" ] || h2c=""
    local tls=""
    # One certificate, served whatever the SNI (it is the default pair); ALPN h2 and http/1.1.
    has_tls && tls="  - { name: tls, address: $BENCH_HOST, port: $PROXY_TLS_PORT, protocols: [http1, http2],
      tls: { certificates: [{ cert: $TLS_CERT, key: $TLS_KEY }] } }"
    cat >"$WORK_DIR/moongate.yaml" <<YAML
event_loop_threads: $PROXY_WORKERS
listeners:
  - { name: http, address: $BENCH_HOST, port: $PROXY_H1_PORT }
  - { name: connect, address: $BENCH_HOST, port: $PROXY_CONNECT_PORT }
$h2c
$tls
clusters:
  - { name: origin, endpoints: ["$BENCH_HOST:$ORIGIN_H1_PORT"], pool_size: ${MOONGATE_POOL_SIZE:-256} }
limits:
  max_tunnels: 20000
  max_connections: 20000
  max_tunnels_per_client: 20000
policy:
  plugins_dir: $PLUGINS
  watch: false
  plugins:
    - name: connect_allowlist
      config: { allow: [], allow_addresses: ["$BENCH_HOST:$SINK_PORT"] }
    - name: host_router
      config:
        routes:
          - { host: "app.bench.local", prefix: "/", cluster: origin }
          - { host: "static.bench.local", prefix: "/", cluster: origin }
YAML
    bg moongate "$BIN" serve --config "$WORK_DIR/moongate.yaml" --log-level warning
}

describe() { echo "moongate $("$BIN" version 2>/dev/null | cut -d' ' -f2), $PROXY_WORKERS event loop, Lua route + connect decisions"; }

adapter_main "$@"
