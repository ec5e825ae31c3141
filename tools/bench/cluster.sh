# shellcheck shell=bash
# Sourced by chaos.sh and soak.sh: the whole system on free, fixed ports, each service startable
# again on the same ports after it is killed, so that the others find it where it was.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"
#   cluster_start                 # simulator, broker, self-coding, word-count, router, 2 gateways
#   cluster_kill anima-router KILL; cluster_launch anima-router; cluster_wait_ready anima-router
#
# Services are named by binary, the two gateways anima-gateway-0 and anima-gateway-1. Each
# service's log is $CLUSTER_DIR/NAME.log (appended to across restarts); CLUSTER_PID[NAME] is its
# running pid. Every launch, kill and exit is a line "EPOCH_MS EVENT NAME [DETAIL]" in
# $CLUSTER_DIR/events.log (EVENT: start, ready, kill, term, exit), which the chaos client reads to
# tell a connection cut by a kill from one lost by a bug. SIM_FAULTS (a --faults mix) is given to
# the simulator. cluster_stop (on exit) stops everything, gateways first.
CLUSTER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER_BIN="${ANIMA_BIN_DIR:-$CLUSTER_ROOT/build/bin}"
CLUSTER_DIR="${CLUSTER_DIR:-$(mktemp -d /tmp/anima-cluster.XXXXXX)}"
mkdir -p "$CLUSTER_DIR"
chmod 700 "$CLUSTER_DIR"  # self-coding's --data-dir must be private to its user
declare -A CLUSTER_PID=() CLUSTER_CMD=() CLUSTER_PORT=() CLUSTER_METRICS=()
CLUSTER_ORDER=(anima-llm-sim anima-llm-broker anima-self-coding anima-word-count anima-router
  anima-gateway-0 anima-gateway-1)

now_ms() { date +%s%3N; }
cluster_event() { echo "$(now_ms) $*" >>"$CLUSTER_DIR/events.log"; }

# Free loopback ports, one per line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

cluster_define() {
  local ports
  mapfile -t ports < <(free_ports 14)
  local i=0 name
  for name in "${CLUSTER_ORDER[@]}"; do
    CLUSTER_PORT[$name]=${ports[i]}
    CLUSTER_METRICS[$name]=${ports[i + 7]}
    i=$((i + 1))
  done
  local sim="http://127.0.0.1:${CLUSTER_PORT[anima-llm-sim]}"
  local logs=(--log-level=warn)
  CLUSTER_CMD[anima-llm-sim]="anima-llm-sim --rules=$CLUSTER_ROOT/tools/llm_sim/rules.json ${logs[*]}"
  [[ -n "${SIM_FAULTS:-}" ]] && CLUSTER_CMD[anima-llm-sim]+=" --faults=$SIM_FAULTS"
  CLUSTER_CMD[anima-llm-broker]="anima-llm-broker --openai-base-url=$sim/v1 --venice-base-url=$sim/api/v1 --gemini-base-url=$sim/v1beta ${logs[*]}"
  # Short leases: a job whose worker was killed is taken up again 3 s later, not 15.
  CLUSTER_CMD[anima-self-coding]="anima-self-coding --broker=127.0.0.1:${CLUSTER_PORT[anima-llm-broker]} --data-dir=$CLUSTER_DIR/self-coding --lease-ms=3000 --heartbeat-ms=1000 ${logs[*]}"
  CLUSTER_CMD[anima-word-count]="anima-word-count ${logs[*]}"
  # The word-count module of tools/word_count/router.json, at this cluster's port.
  sed "s/127.0.0.1:50060/127.0.0.1:${CLUSTER_PORT[anima-word-count]}/" \
    "$CLUSTER_ROOT/tools/word_count/router.json" >"$CLUSTER_DIR/router.json"
  CLUSTER_CMD[anima-router]="anima-router --broker=127.0.0.1:${CLUSTER_PORT[anima-llm-broker]} --self-coding=127.0.0.1:${CLUSTER_PORT[anima-self-coding]} --config=$CLUSTER_DIR/router.json ${logs[*]}"
  for i in 0 1; do
    CLUSTER_CMD[anima-gateway-$i]="anima-gateway --router=127.0.0.1:${CLUSTER_PORT[anima-router]} --drain-timeout-ms=${GATEWAY_DRAIN_MS:-8000} ${logs[*]}"
  done
  mkdir -p "$CLUSTER_DIR/self-coding"
  chmod 700 "$CLUSTER_DIR/self-coding"
}

# cluster_launch NAME: starts NAME on its ports (returns at once; see cluster_wait_ready).
cluster_launch() {
  local name="$1" cmd
  cmd="${CLUSTER_CMD[$name]}"
  rm -f "$CLUSTER_DIR/$name.ready"
  # shellcheck disable=SC2086  # the command line is a list of words
  "$CLUSTER_BIN/${cmd%% *}" ${cmd#* } --port="${CLUSTER_PORT[$name]}" \
    --metrics-port="${CLUSTER_METRICS[$name]}" --ready-file="$CLUSTER_DIR/$name.ready" \
    >>"$CLUSTER_DIR/$name.log" 2>&1 &
  CLUSTER_PID[$name]=$!
  cluster_event start "$name" "${CLUSTER_PID[$name]}"
}

# cluster_wait_ready NAME [SECONDS]: until its ready file appears (1: it exited or timed out).
cluster_wait_ready() {
  local name="$1" deadline=$((SECONDS + ${2:-20}))
  until [[ -s "$CLUSTER_DIR/$name.ready" ]]; do
    if ! kill -0 "${CLUSTER_PID[$name]}" 2>/dev/null || ((SECONDS > deadline)); then
      echo "$name did not start; the end of $CLUSTER_DIR/$name.log:" >&2
      tail -20 "$CLUSTER_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.05
  done
  cluster_event ready "$name" "${CLUSTER_PID[$name]}"
}

cluster_start() {
  cluster_define
  local name
  for name in "${CLUSTER_ORDER[@]}"; do
    cluster_launch "$name"
    cluster_wait_ready "$name" || return 1
  done
}

# cluster_kill NAME SIGNAL: sends SIGNAL (KILL or TERM) and waits for the exit, whose status it
# leaves in KILL_STATUS (not printed: `wait` only works in this shell, not in a $(...) subshell).
cluster_kill() {
  local name="$1" signal="$2" pid
  pid="${CLUSTER_PID[$name]}"
  cluster_event "$([[ $signal == KILL ]] && echo kill || echo term)" "$name" "$pid"
  kill "-$signal" "$pid" 2>/dev/null || true
  KILL_STATUS=0
  wait "$pid" 2>/dev/null || KILL_STATUS=$?
  cluster_event exit "$name" "$pid" "$KILL_STATUS"
}

# cluster_dead: the names of services whose process has gone (empty: none).
cluster_dead() {
  local name
  for name in "${CLUSTER_ORDER[@]}"; do
    kill -0 "${CLUSTER_PID[$name]}" 2>/dev/null || echo "$name"
  done
}

# cluster_sample NAME: "rss_kib fds threads" of its current process.
cluster_sample() {
  local pid="${CLUSTER_PID[$1]}"
  local rss threads fds
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  echo "${rss:-0} $fds ${threads:-0}"
}

cluster_stop() {
  local i name
  for ((i = ${#CLUSTER_ORDER[@]} - 1; i >= 0; i--)); do
    name="${CLUSTER_ORDER[i]}"
    if [[ -n "${CLUSTER_PID[$name]:-}" ]]; then kill -TERM "${CLUSTER_PID[$name]}" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
}
