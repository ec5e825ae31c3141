#!/usr/bin/env bash
# Starts anima-llm-sim, anima-llm-broker, anima-router and anima-gateway from build/bin on their
# default ports, runs the benchmark set of docs/BENCHMARKS.md against them, and stops every
# process it started (also on Ctrl-C or failure).
#
#   tools/bench/run_system_bench.sh [OUT_DIR]      # default /tmp/anima-bench
#   DURATION=10 WARMUP=1 RATES="200 1000" tools/bench/run_system_bench.sh
#   TARGET=sim tools/bench/run_system_bench.sh     # only the simulator (and only it is started)
#   CLOSED=0 RATES=5000 CONNECTIONS=128 tools/bench/run_system_bench.sh   # fixed-rate runs only
#   KEYS=10000 tools/bench/run_system_bench.sh     # auth on: a keys file of that many principals
#                                                  # with quotas; the bench is one of them
#   REDIS=1 KEYS=100 tools/bench/run_system_bench.sh
#                                   # shared state: a redis-server started here holds the router's
#                                   # conversation memory and the gateway's quotas
#   TARGET=ws PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
#     tools/bench/run_system_bench.sh              # the services under another allocator
#   GATEWAY_ARGS=--admission=false tools/bench/run_system_bench.sh   # more gateway flags
#   SIM_PORT=28080 BROKER_PORT=60052 ROUTER_PORT=60051 GATEWAY_PORT=13002 \
#     tools/bench/run_system_bench.sh              # other ports than each service's default
#   SCENARIO=overload CONNECTIONS=128 tools/bench/run_system_bench.sh
#                                   # capacity, then open loop at STEPS x capacity
#                                   # (default 0.1,0.5,1,1.5,2,3): goodput, accepted p99, refusals
#
# Each run also prints the CPU each process spent per answered message (anima-bench --cpu-pids:
# user + system time from /proc/PID/stat over the recorded window and the drain) and the ratio
# of Anima's three processes to the simulator's: on the ws target the simulator serves exactly
# the broker's requests, so the ratio is what Anima costs per unit of provider work. And each
# process's RSS after the run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${ANIMA_BIN_DIR:-$here/../../build/bin}
out=${1:-/tmp/anima-bench}
duration=${DURATION:-10}
warmup=${WARMUP:-1}
rates=${RATES:-200 1000}
target=${TARGET:-both}
closed=${CLOSED:-1}
connections=${CONNECTIONS:-64}
keys=${KEYS:-0}
redis=${REDIS:-0}
preload=${PRELOAD:-}
scenario=${SCENARIO:-load}
# The ports (defaults: every service's own); another set lets two runs share a machine.
sim_port=${SIM_PORT:-18080}
broker_port=${BROKER_PORT:-50052}
router_port=${ROUTER_PORT:-50051}
gateway_port=${GATEWAY_PORT:-3002}
sim_base="http://127.0.0.1:$sim_port"
mkdir -p "$out"

pids=()
declare -A pid_of=()  # service name -> pid, for the CPU and RSS reports
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# start NAME ARGS...: runs build/bin/NAME with a ready file and waits (10 s at most) for it.
start() {
  local name=$1
  shift
  rm -f "$out/$name.ready"
  local env=()
  [[ -n "$preload" && "$name" != anima-llm-sim ]] && env=(env "LD_PRELOAD=$preload")
  "${env[@]}" "$bin/$name" "$@" --metrics-port 0 --log-level warn --ready-file "$out/$name.ready" \
    >"$out/$name.log" 2>&1 &
  pids+=($!)
  pid_of[$name]=$!
  for _ in $(seq 100); do
    [[ -s "$out/$name.ready" ]] && return 0
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "$name exited at start; see $out/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$name did not become ready in 10 s; see $out/$name.log" >&2
  return 1
}

start anima-llm-sim --port "$sim_port"
if [[ "$target" != sim ]]; then
  shared=()
  if [[ "$redis" == 1 ]]; then
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
      --dir "$out" >"$out/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    shared=(--redis "redis://127.0.0.1:$redis_port")
  fi
  start anima-llm-broker --port "$broker_port" --openai-base-url "$sim_base/v1" \
    --venice-base-url "$sim_base/api/v1" --gemini-base-url "$sim_base/v1beta"
  start anima-router --port "$router_port" --broker "127.0.0.1:$broker_port" "${shared[@]}"
  gateway_auth=()
  if ((keys > 0)); then
    # Every principal has every quota (high enough not to refuse the bench), so each message pays
    # the whole check: rates, in flight, token and cost budgets, and the charge of its answer.
    python3 - "$keys" "$out/keys.json" <<'PY'
import hashlib, json, sys
n, path = int(sys.argv[1]), sys.argv[2]
tier = {"requests_per_second": 100000, "requests_per_minute": 10000000,
        "requests_in_flight": 100000, "tokens_per_minute": 1000000000,
        "tokens_per_day": 10**12, "cost_per_day": 1e9, "cost_per_month": 1e10}
doc = {"tiers": {"bench": tier}, "default_tier": "bench", "principals": {}, "keys": []}
for i in range(n):
    doc["principals"][f"p{i}"] = {}
    doc["keys"].append({"principal": f"p{i}",
                        "sha256": hashlib.sha256(f"bench-key-{i}".encode()).hexdigest()})
json.dump(doc, open(path, "w"))
PY
    gateway_auth=(--auth-keys-file "$out/keys.json")
    export ANIMA_BENCH_TOKEN="bench-key-$((keys / 2))"
  fi
  # The closed-loop runs send far more than 50 msg/s per connection: the per-connection limit
  # would be what they measure.
  # shellcheck disable=SC2086  # GATEWAY_ARGS is a list of flags
  start anima-gateway --port "$gateway_port" --router "127.0.0.1:$router_port" --messages-per-second 1000000 \
    "${gateway_auth[@]}" "${shared[@]}" ${GATEWAY_ARGS:-}
fi

# cpu_pids: "gateway=PID,router=PID,broker=PID,sim=PID" for anima-bench --cpu-pids.
cpu_pids() {
  local name list=()
  declare -A short=([anima-gateway]=gateway [anima-router]=router [anima-llm-broker]=broker
    [anima-llm-sim]=sim)
  for name in "${!pid_of[@]}"; do list+=("${short[$name]}=${pid_of[$name]}"); done
  (IFS=,; echo "${list[*]}")
}

# rss_kib: "name=KiB ..." of every service started here.
rss_kib() {
  local name
  for name in "${!pid_of[@]}"; do
    printf '%s=%s ' "$name" "$(awk '/^VmRSS/ {print $2}' "/proc/${pid_of[$name]}/status")"
  done
}

# run LABEL ARGS...: one anima-bench run, text report on stdout, JSON line in OUT/LABEL.json.
run() {
  local label=$1
  shift
  echo "== $label: anima-bench --target $target $*"
  "$bin/anima-bench" --target "$target" --url "ws://127.0.0.1:$gateway_port/" \
    --sim-url "$sim_base/v1/chat/completions" --duration "$duration" --warmup "$warmup" "$@" \
    --cpu-pids "$(cpu_pids)" --json >"$out/$label.json"
  python3 - "$out/$label.json" "$(rss_kib)" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
rss = dict(kv.split("=") for kv in sys.argv[2].split())
runs = [doc] if "target" in doc else [doc[k] for k in ("sim", "ws") if k in doc]
for r in runs:
    l = r["latency_ms"]
    print(f'{r["target"]:>4}: sent {r["sent"]} ok {r["ok"]} errors {r["errors"]} '
          f'{r["throughput_per_s"]:.1f} ok/s  p50 {l["p50"]:.3f} p90 {l["p90"]:.3f} '
          f'p99 {l["p99"]:.3f} p99.9 {l["p99.9"]:.3f} max {l["max"]:.3f} ms  '
          f'generator CPU {r["generator_cpu_percent"]:.0f} %')
    for n in r["notes"]:
        print("      note:", n)
if "overhead_ms" in doc:
    o = doc["overhead_ms"]
    print(f'overhead: p50 {o["p50"]:.3f} p90 {o["p90"]:.3f} p99 {o["p99"]:.3f} '
          f'p99.9 {o["p99.9"]:.3f} max {o["max"]:.3f} ms')
for r in runs:
    cpu = r.get("cpu", {})
    sim = cpu.get("sim", {}).get("us_per_message", 0)
    if r["target"] == "ws" and cpu:
        print("  cpu per message:", "  ".join(
            f'{n} {c["us_per_message"]:.0f} us' + (f' ({c["us_per_message"] / sim:.1f}x)'
                                                   if sim and n != "sim" else "")
            for n, c in cpu.items()), f' anima/sim {r["anima_over_sim"]:.1f}x')
print("rss after:", "  ".join(f'{n} {int(v) / 1024:.0f} MiB' for n, v in sorted(rss.items())))
PY
}

if [[ "$scenario" == overload ]]; then
  # Capacity by a closed-loop run over the same connections, then open loop at each step.
  echo "== overload: anima-bench --scenario overload --connections $connections ${STEPS:+--steps $STEPS}"
  "$bin/anima-bench" --scenario overload --url "ws://127.0.0.1:$gateway_port/" --duration "$duration" --warmup "$warmup" \
    --connections "$connections" ${STEPS:+--steps "$STEPS"} --cpu-pids "$(cpu_pids)" \
    | tee "$out/overload.txt"
  exit 0
fi
if [[ "$closed" == 1 ]]; then
  run closed-c16 --rate 0 --connections 16 --in-flight 1
fi
for rate in $rates; do
  run "open-${rate}" --rate "$rate" --connections "$connections"
done
if [[ "$closed" == 1 ]]; then
  run closed-c16-stream --rate 0 --connections 16 --in-flight 1 --stream
fi
