#!/usr/bin/env bash
# The floor under Moongate's tunnel figures, for the peer harness (BENCH_ADAPTERS=scripts/bench):
# `moongate-tunnel-floor` is SwiftNIO channels on one event loop and Moongate's own relay
# (GlueHandler) with nothing else — no HTTP parser, no policy, no registry, no timers, no log.
# It answers every request head with a 200 and relays to the sink. Whatever Moongate does per
# tunnel sits on top of this; a peer that beats the floor beats any design on NIO channels.
source "$BENCH_DIR/lib/adapter.sh"
BIN=${MOONGATE_FLOOR_BIN:?set MOONGATE_FLOOR_BIN to the built moongate-tunnel-floor binary}

endpoints() {
    echo "P3 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    echo "P4 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    echo "P5 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
}

start() { bg nio-floor "$BIN" "$BENCH_HOST" "$PROXY_CONNECT_PORT" "$BENCH_HOST" "$SINK_PORT"; }

describe() { echo "SwiftNIO $PROXY_WORKERS event loop + Moongate's GlueHandler only (the floor of Moongate's tunnel path)"; }

adapter_main "$@"
