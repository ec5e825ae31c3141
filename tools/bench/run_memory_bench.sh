#!/usr/bin/env bash
# The memory benchmark of docs/BENCHMARKS.md ("Memory: a conversation's cost, and giving memory
# back"): starts the simulator, broker, router and gateway on free ports, reads the resident
# memory (VmRSS) of the gateway, router and broker once they have been idle IDLE seconds (5),
# runs one anima-bench load against the gateway, and reads it again at the end of the load and
# every 10 s for SETTLE seconds (60). Then the router's stored conversations (its
# anima_router_conversations gauge) and what each costs: (router RSS at the end of SETTLE - idle)
# / conversations. Stops everything it started, also on Ctrl-C.
#
#   tools/bench/run_memory_bench.sh [anima-bench args...]  # default: closed loop c16, 20 s
#   tools/bench/run_memory_bench.sh --rate 3000 --connections 64 --duration 13   # an overload
#   tools/bench/run_memory_bench.sh --conversations 10000 --requests 10000 --duration 600
#
# GATEWAY_ARGS and ROUTER_ARGS go to the gateway and the router. SERVICE_ENV (e.g.
# "MALLOC_ARENA_MAX=2 ANIMA_MEMORY_TRIM_INTERVAL_MS=0") is exported to every process started
# here (anima-bench included, whose memory is not measured).
set -euo pipefail
# shellcheck source=services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"
idle=${IDLE:-5}
settle=${SETTLE:-60}
load=("$@")
((${#load[@]} > 0)) || load=(--rate 0 --connections 16 --in-flight 1 --duration 20)
for kv in ${SERVICE_ENV:-}; do export "${kv?}"; done

declare -A pid_of=()
start anima-llm-sim
start anima-llm-broker --config="$ROOT/services/llm_broker/config.sim.json" \
  --openai-base-url="http://127.0.0.1:$(port anima-llm-sim http)/v1" --log-level=warn
pid_of[broker]=${PIDS[-1]}
# shellcheck disable=SC2086  # ROUTER_ARGS and GATEWAY_ARGS are lists of flags
start anima-router --broker="127.0.0.1:$(port anima-llm-broker grpc)" --log-level=warn \
  ${ROUTER_ARGS:-}
pid_of[router]=${PIDS[-1]}
# The closed-loop load sends far more than the default 50 frames a second per connection.
# shellcheck disable=SC2086
start anima-gateway --router="127.0.0.1:$(port anima-router grpc)" --log-level=warn \
  --messages-per-second=1000000 ${GATEWAY_ARGS:-}
pid_of[gateway]=${PIDS[-1]}

# rss LABEL: one line of every service's VmRSS in MiB.
rss() {
  local line name kib
  line=$(printf '%-8s' "$1")
  for name in gateway router broker; do
    kib=$(awk '/^VmRSS/ {print $2}' "/proc/${pid_of[$name]}/status")
    line+=$(printf '  %s %6.1f MiB' "$name" "$(echo "$kib / 1024" | bc -l)")
    last_kib[$name]=$kib
  done
  echo "$line"
}
declare -A last_kib=()

sleep "$idle"
rss idle
idle_router_kib=${last_kib[router]}
"$BIN/anima-bench" --url "ws://127.0.0.1:$(port anima-gateway http)/" --warmup 0 "${load[@]}" |
  grep -E 'requests sent|throughput|latency ms' || true
rss end
for ((t = 10; t <= settle; t += 10)); do
  sleep 10
  rss "+${t} s"
done
conversations=$(curl -s "http://127.0.0.1:$(port anima-router metrics)/metrics" |
  awk '/^anima_router_conversations / {print $2}')
echo "router: ${conversations:-?} conversations stored"
if [[ -n "$conversations" ]] && ((conversations > 0)); then
  echo "router: $(((last_kib[router] - idle_router_kib) * 1024 / conversations)) bytes of RSS" \
    "per stored conversation (RSS at +${settle} s - idle, / conversations)"
fi
