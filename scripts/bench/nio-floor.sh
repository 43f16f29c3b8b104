#!/usr/bin/env bash
# The floor under Moongate's tunnel figures, for the peer harness (BENCH_ADAPTERS=scripts/bench):
# `moongate-tunnel-floor` is SwiftNIO channels on one event loop and Moongate's own relay
# (GlueHandler) with nothing else — no HTTP parser, no policy, no registry, no timers, no log.
# It answers every request head with a 200 and relays to the sink. Whatever Moongate does per
# tunnel sits on top of this; a peer that beats the floor beats any design on NIO channels.
# With MOONGATE_H2_FLOOR_BIN set, `moongate-h2-floor --proxy` serves P1, P2, P7 and P8 as well:
# each request forwarded to the origin over HTTP/1.1 keep-alive, with no policy, no checks, no log —
# swift-nio-http2 with no channel per stream for P2 (h2c), a byte scan of the head for P1 (HTTP/1.1),
# and swift-nio-ssl with ALPN h2 / http/1.1 and records sealed as Moongate seals them for P7 and P8.
# What any proxy of that shape on SwiftNIO costs at least.
source "$BENCH_DIR/lib/adapter.sh"
BIN=${MOONGATE_FLOOR_BIN:?set MOONGATE_FLOOR_BIN to the built moongate-tunnel-floor binary}

endpoints() {
    if [ -n "${MOONGATE_H2_FLOOR_BIN:-}" ]; then
        echo "P1 http://$BENCH_HOST:$PROXY_H1_PORT"
        echo "P2 http://$BENCH_HOST:$PROXY_H2C_PORT"
        echo "P7 https://$BENCH_HOST:$PROXY_TLS_PORT"
        echo "P8 https://$BENCH_HOST:$PROXY_TLS_PORT"
    fi
    echo "P3 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    echo "P4 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
    echo "P5 connect://$BENCH_HOST:$PROXY_CONNECT_PORT"
}

start() {
    bg nio-floor "$BIN" "$BENCH_HOST" "$PROXY_CONNECT_PORT" "$BENCH_HOST" "$SINK_PORT"
    # The HTTP/2 floor listens on 127.0.0.1 and forwards to the origin there (the harness's BENCH_HOST).
    [ -n "${MOONGATE_H2_FLOOR_BIN:-}" ] || return 0
    bg nio-h2-floor "$MOONGATE_H2_FLOOR_BIN" "$PROXY_H2C_PORT" --proxy "$ORIGIN_H1_PORT"
    bg nio-h1-floor "$MOONGATE_H2_FLOOR_BIN" "$PROXY_H1_PORT" --proxy "$ORIGIN_H1_PORT" --http1
    bg nio-tls-floor "$MOONGATE_H2_FLOOR_BIN" "$PROXY_TLS_PORT" --proxy "$ORIGIN_H1_PORT" --tls "$TLS_CERT" "$TLS_KEY"
}

describe() { echo "SwiftNIO $PROXY_WORKERS event loop + Moongate's GlueHandler only (the floor of Moongate's tunnel path)"; }

adapter_main "$@"
