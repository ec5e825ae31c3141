#!/usr/bin/env bash
# The chaos run: the whole system (simulator, broker, self-coding, word-count, router and two
# gateways) under a steady mixed load from tools/bench/chaos_client.py, while a schedule kills
# each service in turn with SIGKILL and starts it again, and sends SIGTERM to a gateway (a
# rolling update: its clients reconnect to the other one). The client counts every request's
# answers and every job's events; this script adds what the processes did: exits nobody asked
# for (each one fails the run) and RSS, open fds and threads of each service before the first
# fault and after the last. docs/BENCHMARKS.md "Chaos" has the figures and the method.
#
#   tools/bench/chaos.sh [DURATION]        # seconds of load (default 300); faults every PERIOD s
#   PERIOD=12 WARMUP=10 DOWN_MS=1000 tools/bench/chaos.sh 90
#   SIM_FAULTS='openai=rate_limit_429:0.2,error_500:0.1' tools/bench/chaos.sh   # and a storm
#   CHAOS_FAULTS=none tools/bench/chaos.sh 600     # no kills: the load alone
#   CLIENT_ARGS='--chat-rate 40' tools/bench/chaos.sh   # more or less load (see chaos_client.py -h)
#
# The report is written to stdout and, with the event log and every service's log, to
# OUT_DIR (default: a new /tmp/anima-chaos.* directory, kept). Exit 0: every request answered
# once, every job ended with all its events, no exit unasked; 1 otherwise; 4: could not start.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DURATION="${1:-300}"
PERIOD="${PERIOD:-15}"
WARMUP="${WARMUP:-10}"
DOWN_MS="${DOWN_MS:-1000}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/anima-chaos.XXXXXX)}"
export CLUSTER_DIR="$OUT_DIR"  # where cluster.sh keeps logs, ready files and events.log
# shellcheck source=cluster.sh
source "$HERE/cluster.sh"
/usr/bin/python3 -c "import websockets" 2>/dev/null || {
  echo "chaos.sh: needs python3-websockets (tools/anima deps installs it)" >&2
  exit 4
}

client_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
  if [[ -n "$client_pid" ]]; then kill "$client_pid" 2>/dev/null || true; fi
  cluster_stop
}
trap finish EXIT
trap 'exit 130' INT TERM

cluster_start || exit 4
unexpected=()

# watchful_sleep SECONDS: sleeps, restarting (and recording) any service that exited unasked.
watchful_sleep() {
  local end=$(($(now_ms) + ${1%.*} * 1000)) name
  while (($(now_ms) < end)); do
    for name in $(cluster_dead); do
      local status=0
      wait "${CLUSTER_PID[$name]}" 2>/dev/null || status=$?
      cluster_event exit "$name" "${CLUSTER_PID[$name]}" "$status" unasked
      unexpected+=("$name (pid ${CLUSTER_PID[$name]}, status $status)")
      echo "chaos: $name exited unasked with status $status; starting it again" >&2
      cluster_launch "$name"
      cluster_wait_ready "$name" || true
    done
    sleep 0.2
  done
}

ws_urls="ws://127.0.0.1:${CLUSTER_PORT[anima-gateway-0]}/,ws://127.0.0.1:${CLUSTER_PORT[anima-gateway-1]}/"
http_urls="http://127.0.0.1:${CLUSTER_PORT[anima-gateway-0]},http://127.0.0.1:${CLUSTER_PORT[anima-gateway-1]}"
# shellcheck disable=SC2086  # CLIENT_ARGS is a list of flags
/usr/bin/python3 "$HERE/chaos_client.py" --ws="$ws_urls" --http="$http_urls" \
  --duration="$DURATION" --events="$OUT_DIR/events.log" --json="$OUT_DIR/client.json" \
  ${CLIENT_ARGS:-} >"$OUT_DIR/client.txt" 2>"$OUT_DIR/client.log" &
client_pid=$!

declare -A before=()
watchful_sleep "$WARMUP"
for name in "${CLUSTER_ORDER[@]}"; do before[$name]="$(cluster_sample "$name")"; done

# The schedule: each of our services killed in turn, then a gateway told to stop.
schedule=(KILL:anima-llm-broker KILL:anima-router KILL:anima-self-coding KILL:anima-word-count
  KILL:anima-gateway-0 TERM:anima-gateway-1)
[[ "${CHAOS_FAULTS:-}" == none ]] && schedule=()
step=0
start_s=$SECONDS
while ((${#schedule[@]} > 0 && SECONDS - start_s + PERIOD < DURATION - WARMUP)); do
  watchful_sleep "$PERIOD"
  action="${schedule[step % ${#schedule[@]}]}"
  signal="${action%%:*}"
  name="${action#*:}"
  cluster_kill "$name" "$signal"
  echo "chaos: $(date +%T) SIG$signal $name -> exit status $KILL_STATUS" >&2
  # A kubelet restarts a killed container at once; a rolling update starts the new pod at once.
  [[ "$signal" == KILL ]] && sleep "$(awk -v ms="$DOWN_MS" 'BEGIN { print ms / 1000 }')"
  cluster_launch "$name"
  cluster_wait_ready "$name" 30 || unexpected+=("$name did not start again")
  step=$((step + 1))
done
while kill -0 "$client_pid" 2>/dev/null; do watchful_sleep 1; done
client_status=0
wait "$client_pid" || client_status=$?
client_pid=""

echo "# Anima chaos run: ${DURATION} s of load, $step faults (every ${PERIOD} s after ${WARMUP} s)"
echo
cat "$OUT_DIR/client.txt"
echo
printf '%-18s %14s %14s %10s %10s %10s %10s\n' service "rss KiB before" "rss KiB after" \
  "fds before" "fds after" "thr before" "thr after"
for name in "${CLUSTER_ORDER[@]}"; do
  read -r rss0 fds0 thr0 <<<"${before[$name]}"
  read -r rss1 fds1 thr1 <<<"$(cluster_sample "$name")"
  printf '%-18s %14s %14s %10s %10s %10s %10s\n' "$name" "$rss0" "$rss1" "$fds0" "$fds1" "$thr0" "$thr1"
done
echo "(after: the process running at the end, a new one for every service restarted)"
echo
# What the broker spent on the providers (since its last start): attempts by provider and outcome,
# and its circuit breakers' transitions.
curl -s "http://127.0.0.1:${CLUSTER_METRICS[anima-llm-broker]}/metrics" | awk '
  /^anima_broker_provider_requests_total\{/ {
    match($0, /provider="[^"]*"/); p = substr($0, RSTART + 10, RLENGTH - 11)
    match($0, /outcome="[^"]*"/); o = substr($0, RSTART + 9, RLENGTH - 10)
    n[p] += $NF; if (o != "ok") out[p] = out[p] sprintf(" %s %d", o, $NF)
  }
  /^anima_broker_breaker_transitions_total\{/ {
    match($0, /provider="[^"]*"/); p = substr($0, RSTART + 10, RLENGTH - 11)
    match($0, /to="[^"]*"/); t = substr($0, RSTART + 4, RLENGTH - 5)
    br[p] = br[p] sprintf(" %s %d", t, $NF)
  }
  END {
    for (p in n) printf "%-8s %9d %s;%s\n", p, n[p], out[p] ? out[p] : " none", br[p] ? br[p] : " none"
  }' | sort | { printf '%-8s %9s  %s\n' provider attempts "not ok (by outcome); breaker transitions"; cat; }
echo "(the broker running at the end: its counters start again at each restart)"
if ((${#unexpected[@]} > 0)); then
  echo
  echo "FAILED: services exited unasked: ${unexpected[*]}"
fi
echo
echo "logs, events and the client's JSON summary: $OUT_DIR"
if ((client_status == 0 && ${#unexpected[@]} == 0)); then exit 0; fi
exit 1
