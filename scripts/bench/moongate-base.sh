#!/usr/bin/env bash
# Moongate's adapter on a baseline build (MOONGATE_BASE_BIN, with its own MOONGATE_BASE_PLUGINS), so a
# change is measured against the build before it in the same harness run:
#   MOONGATE_BASE_BIN=/path/to/old/moongate MOONGATE_BASE_PLUGINS=/path/to/old/plugins \
#     scripts/bench/run --proxies direct,nio-floor,moongate-base,moongate
export MOONGATE_BIN=${MOONGATE_BASE_BIN:?set MOONGATE_BASE_BIN to the baseline moongate binary}
export MOONGATE_PLUGINS=${MOONGATE_BASE_PLUGINS:?set MOONGATE_BASE_PLUGINS to the baseline plugins folder}
export MOONGATE_NO_H2=${MOONGATE_NO_H2:-1}
exec "$(dirname "$0")/moongate.sh" "$@"
