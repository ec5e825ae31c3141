# shellcheck shell=bash
# Sourced by the benchmark scripts in this folder: starts Anima's binaries on free ports, each
# with a ready file in a private run directory, and stops everything started when the script
# exits (also on Ctrl-C).
#   source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
#   start anima-llm-sim
#   start anima-router --broker="127.0.0.1:$(port anima-llm-broker grpc)"
# Sets ROOT (the checkout), BIN (build/bin unless set) and RUN (the run directory, private to
# this user, as self-coding's --data-dir must be).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN:-$ROOT/build/bin}"
RUN="$(mktemp -d /tmp/anima-bench.XXXXXX)"
PIDS=()

stop_services() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  rm -rf "$RUN"
}
trap stop_services EXIT INT TERM

# start NAME ARGS...: runs $BIN/NAME --port=0 --metrics-port=0 with a ready file and waits until
# it is listening; on failure prints its log and exits 4.
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

# port NAME KEY: a port from NAME's ready file (KEY: grpc, http, metrics, ...).
port() {
  python3 -c "import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
    "$RUN/$1.json" "$2"
}
