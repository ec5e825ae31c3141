#!/usr/bin/env bash
# Idle cost of the whole system (docs/BENCHMARKS.md, "Idle CPU"): starts the simulator, broker,
# self-coding, router and gateway with their defaults on free ports, no clients, and reports the
# CPU time they use together over SECONDS (default 30) and each one's resident memory.
set -euo pipefail
SECONDS_IDLE="${1:-30}"
# shellcheck source=services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

ticks() {  # utime + stime of every started process, in clock ticks
  local total=0
  for p in "${PIDS[@]}"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

start anima-llm-sim
start anima-llm-broker --config="$ROOT/services/llm_broker/config.sim.json"
mkdir -p "$RUN/self-coding"
start anima-self-coding --broker="127.0.0.1:$(port anima-llm-broker grpc)" \
  --data-dir="$RUN/self-coding"
start anima-router --broker="127.0.0.1:$(port anima-llm-broker grpc)" \
  --self-coding="127.0.0.1:$(port anima-self-coding grpc)"
start anima-gateway --router="127.0.0.1:$(port anima-router grpc)"
sleep 3
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep "$SECONDS_IDLE"
used=$(($(ticks) - before))
python3 - "$used" "$hz" "$SECONDS_IDLE" "$(nproc)" <<'PY'
import sys
used, hz, seconds, cores = (int(a) for a in sys.argv[1:])
core = 100.0 * used / hz / seconds
print(f"idle CPU of all services: {used} ticks in {seconds} s = {core:.2f} % of one core, "
      f"{core / cores:.2f} % of the machine")
PY
for p in "${PIDS[@]}"; do
  printf '%-18s %6d KiB resident\n' "$(cat "/proc/$p/comm")" \
    "$(awk '/VmRSS/ {print $2}' "/proc/$p/status")"
done
