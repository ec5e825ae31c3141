#!/usr/bin/env bash
# The idle-connections benchmark of docs/BENCHMARKS.md: starts the simulator, broker, router and
# gateway (with --max-connections comfortably above CONNECTIONS) on their own ports, runs
# `anima-bench --scenario idle` against the gateway and its metrics endpoint, and stops
# everything it started, also on Ctrl-C.
#   tools/bench/run_idle_bench.sh [CONNECTIONS] [anima-bench args...]   # default 10000
# e.g. tools/bench/run_idle_bench.sh 1000 --hold 30 --json
# GATEWAY_ARGS go to the gateway (e.g. GATEWAY_ARGS=--state-interval-ms=3600000: no broadcasts).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN:-$ROOT/build/bin}"
CONNECTIONS="${1:-10000}"
shift || true
RUN="$(mktemp -d /tmp/anima-idle-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM

# Both ends of every connection are on this machine: the gateway and anima-bench each need a
# descriptor per connection.
if (( $(ulimit -n) < CONNECTIONS + 1000 )); then
  ulimit -n "$(ulimit -Hn)"
fi

# start NAME ARGS...: runs build/bin/NAME with a ready file and waits for it.
start() {
  local name="$1"; shift
  "$BIN/$name" --port=0 --metrics-port=0 --ready-file="$RUN/$name.json" "$@" \
    >"$RUN/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do [[ -f "$RUN/$name.json" ]] && return 0; sleep 0.05; done
  echo "$name did not start:" >&2
  cat "$RUN/$name.log" >&2
  exit 4
}
port() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$RUN/$1.json" "$2"; }

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
