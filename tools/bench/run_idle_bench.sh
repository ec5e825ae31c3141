#!/usr/bin/env bash
# The idle-connections benchmark of docs/BENCHMARKS.md: starts the simulator, broker, router and
# gateway (with --max-connections comfortably above CONNECTIONS) on their own ports, runs
# `anima-bench --scenario idle` against the gateway and its metrics endpoint, and stops
# everything it started, also on Ctrl-C.
#   tools/bench/run_idle_bench.sh [CONNECTIONS] [anima-bench args...]   # default 10000
# e.g. tools/bench/run_idle_bench.sh 1000 --hold 30 --json
# GATEWAY_ARGS go to the gateway (e.g. GATEWAY_ARGS=--state-interval-ms=3600000: no broadcasts).
set -euo pipefail
# shellcheck source=services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
CONNECTIONS="${1:-10000}"
shift || true

# Both ends of every connection are on this machine: the gateway and anima-bench each need a
# descriptor per connection.
if (( $(ulimit -n) < CONNECTIONS + 1000 )); then
  ulimit -n "$(ulimit -Hn)"
fi

start anima-llm-sim
start anima-llm-broker --config="$ROOT/services/llm_broker/config.sim.json" \
  --openai-base-url="http://127.0.0.1:$(port anima-llm-sim http)/v1"
start anima-router --broker="127.0.0.1:$(port anima-llm-broker grpc)"
# shellcheck disable=SC2086  # GATEWAY_ARGS is a list of flags
start anima-gateway --router="127.0.0.1:$(port anima-router grpc)" \
  --max-connections=$((CONNECTIONS + 1000)) ${GATEWAY_ARGS:-}
"$BIN/anima-bench" --scenario idle --connections "$CONNECTIONS" \
  --url "ws://127.0.0.1:$(port anima-gateway http)/" \
  --metrics-url "http://127.0.0.1:$(port anima-gateway metrics)/metrics" "$@"
