#!/usr/bin/env bash
# `tools/anima up` supervises like a kubelet: a service killed with SIGKILL is started again (the
# exit and the restart logged and counted in supervisor.tsv), a service that keeps dying is
# restarted after a growing back-off, the system answers chats again after each restart, the
# other services are untouched, and SIGINT (Ctrl-C) still stops every process it started.
#
# `up` binds the fixed ports of docs/operations.md; when one is taken the test is skipped (77).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
: "${ANIMA_BIN_DIR:=$ANIMA_SOURCE_DIR/build/bin}"
for port in 3002 9100 9101 9102 9103 9104 9105 18080 50051 50052 50053 50060; do
  if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "SKIP: port $port is in use (tools/anima up needs it)"
    exit 77
  fi
done
WORK="$(mktemp -d /tmp/anima-ops-up.XXXXXX)"
up_pid=""
cleanup() {
  if [[ -n "$up_pid" ]] && kill -0 "$up_pid" 2>/dev/null; then kill -INT "$up_pid"; sleep 2; fi
  # Whatever is left of this test's services (their logs are in $WORK).
  pkill -KILL -f -- "--ready-file=$WORK/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
status=0
fail() {
  echo "FAIL: $*"
  status=1
}
# pid_of SERVICE: its pid in the supervisor's table.
pid_of() { awk -v s="$1" '$1 == s { print $2 }' "$WORK/run/supervisor.tsv"; }
restarts_of() { awk -v s="$1" '$1 == s { print $3 }' "$WORK/run/supervisor.tsv"; }
restarted() { [[ "$(restarts_of "$1")" == "$2" ]]; }  # restarted SERVICE N: N restarts counted
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}
chat_ok() { "$ANIMA_BIN_DIR/anima-cli" chat "are you back?" 2>&1 | grep -q "provider="; }

# A background job of a script starts with SIGINT ignored, and bash cannot trap a signal that was
# ignored when it started: python puts SIGINT back to its default first, as a terminal has it.
BUILD_DIR="$(dirname "$ANIMA_BIN_DIR")" ANIMA_RUN_DIR="$WORK/run" ANIMA_DATA_DIR="$WORK/self-coding" \
  python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
  "$ANIMA_SOURCE_DIR/tools/anima" up >"$WORK/up.log" 2>&1 &
up_pid=$!
if ! wait_for 120 grep -q "restarted (with back-off" "$WORK/up.log"; then
  echo "FAIL: tools/anima up did not start; its output:"
  cat "$WORK/up.log"
  exit 1
fi
wait_for 20 chat_ok || fail "no chat answered after up"
gateway_before="$(pid_of anima-gateway)"
broker_before="$(pid_of anima-llm-broker)"

# 1. kill -9 the router: restarted at once, counted, chats answered again.
router="$(pid_of anima-router)"
kill -KILL "$router"
wait_for 20 restarted anima-router 1 || fail "the router was not restarted"
[[ "$(pid_of anima-router)" != "$router" ]] || fail "the router's pid did not change"
kill -0 "$(pid_of anima-router)" 2>/dev/null || fail "the restarted router is not running"
grep -q "anima-router (pid $router) exited with status 137 (SIGKILL)" "$WORK/up.log" ||
  fail "the router's exit was not logged"
wait_for 20 chat_ok || fail "no chat answered after the router's restart"

# 2. It keeps dying: the second restart waits the back-off (1 s), and is counted too.
router="$(pid_of anima-router)"
kill -KILL "$router"
wait_for 20 grep -q "anima-router (pid $router) exited with status 137 (SIGKILL); restarting it in 1000ms" \
  "$WORK/up.log" || fail "the second restart did not back off 1 s"
wait_for 20 restarted anima-router 2 || fail "the second restart was not counted"
wait_for 20 chat_ok || fail "no chat answered after the router's second restart"

# 3. The gateway too; the broker was never touched.
gateway="$(pid_of anima-gateway)"
[[ "$gateway" == "$gateway_before" ]] || fail "the gateway was restarted though nothing killed it"
kill -KILL "$gateway"
wait_for 20 restarted anima-gateway 1 || fail "the gateway was not restarted"
wait_for 20 chat_ok || fail "no chat answered after the gateway's restart"
[[ "$(pid_of anima-llm-broker)" == "$broker_before" && "$(restarts_of anima-llm-broker)" == 0 ]] ||
  fail "the broker was restarted though nothing killed it"

# 4. Ctrl-C stops everything: up exits, and none of its services is left.
kill -INT "$up_pid"
up_gone() { ! kill -0 "$up_pid" 2>/dev/null; }
services_gone() { ! pgrep -f -- "--ready-file=$WORK/" >/dev/null; }
wait_for 30 up_gone || fail "up did not exit on SIGINT"
wait_for 30 services_gone ||
  fail "services left running after SIGINT: $(pgrep -af -- "--ready-file=$WORK/")"
up_pid=""

if ((status)); then
  echo "--- up's output"
  cat "$WORK/up.log"
  exit 1
fi
echo "PASS: up restarts what dies (with back-off, logged and counted) and stops everything on SIGINT"
