#!/usr/bin/env bash
# Drives the web console (gateway/console/) in headless Chromium against the real binaries:
# starts the whole system on free ports with auth on (system.sh), then runs
# tests/ops/console/console_test.mjs (puppeteer-core), which checks the served headers, the key
# form (and no form on a second gateway without auth), errors shown next to their request,
# streamed and fanout chat, the demo self-coding job, a reload in the middle of a job, the
# broker's tiles going down and up again around a kill and restart of the broker, the page
# reconnecting to a gateway stopped (SIGTERM, close 1001) and started again, and the job list
# (docs/testing.md lists every step).
# Screenshots of each state go to <build>/console-screenshots/.
#
# puppeteer-core is installed once, at the version of tests/ops/console/package-lock.json, into
# <build>/ops-cache/console; later runs are offline. Exits 77 (ctest: skipped) only when
# Chromium is not installed or npm cannot reach its registry.
# Usage: console_test.sh   (env ANIMA_BIN_DIR, ANIMA_SOURCE_DIR; CHROMIUM; KEEP_WORK=1)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
: "${ANIMA_BIN_DIR:=$ANIMA_SOURCE_DIR/build/bin}"
BUILD_DIR="$(cd "$ANIMA_BIN_DIR/.." && pwd)"
SKIP=77

CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [[ -z "$CHROMIUM" || ! -x "$CHROMIUM" ]]; then
  echo "SKIP: Chromium is not installed (Debian package chromium; tools/anima deps)"
  exit "$SKIP"
fi
for tool in node npm python3 curl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing" >&2; exit 1; }
done

# shellcheck source=npm_pinned.sh
source "$HERE/npm_pinned.sh"
npm_pinned_install "$HERE/console" "$BUILD_DIR/ops-cache/console" puppeteer-core
export ANIMA_NODE_MODULES="$BUILD_DIR/ops-cache/console/node_modules"

# shellcheck source=system.sh
source "$HERE/system.sh"

WORK="$(mktemp -d /tmp/anima-ops-console.XXXXXX)"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid file
  # What the test started again (not children of this shell: waited for by polling).
  for file in "$WORK"/procs/*.restarted.pid; do
    [[ -s "$file" ]] || continue
    pid="$(cat "$file")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  anima_stop_system
  if [[ "${KEEP_WORK:-}" == 1 ]]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# A timeout (ctest) or Ctrl-C still stops every process started here.
trap 'exit 143' TERM INT

# The simulator streams a token every 30 ms, so that a streamed answer visibly grows.
export ANIMA_SIM_TOKEN_INTERVAL_MS=30
anima_start_system "$WORK/system"

# The broker's and the gateway's pids, found among the pids system.sh started (by their
# executables, not by name across the machine), with their ports and command lines (NUL-separated)
# so that the test can kill each and start it again with the same flags on the same port.
export ANIMA_PROCS="$WORK/procs"
mkdir -p "$ANIMA_PROCS"
for name in anima-llm-broker anima-gateway; do
  for pid in "${ANIMA_PIDS[@]}"; do
    if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */"$name" ]]; then
      echo "$pid" >"$ANIMA_PROCS/$name.pid"
      cp "/proc/$pid/cmdline" "$ANIMA_PROCS/$name.cmdline"
      echo "${ANIMA_PORT[$name]}" >"$ANIMA_PROCS/$name.port"
    fi
  done
  [[ -s "$ANIMA_PROCS/$name.pid" ]] || { echo "FAIL: no $name among the started pids" >&2; exit 1; }
done

export ANIMA_URL="http://127.0.0.1:${ANIMA_PORT[anima-gateway]}"

# A second gateway on the same router without auth (loopback only), where the page must connect
# without asking for a key.
"$ANIMA_BIN_DIR/anima-gateway" --port=0 --metrics-port=0 --ready-file="$WORK/noauth.ready" \
  --router="127.0.0.1:${ANIMA_PORT[anima-router]}" >"$WORK/system/noauth-gateway.log" 2>&1 &
ANIMA_PIDS+=("$!")
for _ in $(seq 300); do
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/noauth.ready" 2>/dev/null &&
    break
  sleep 0.05
done
ANIMA_NOAUTH_URL="http://127.0.0.1:$(ready_port "$WORK/noauth.ready" http)" ||
  { echo "FAIL: the gateway without auth did not start" >&2; exit 1; }
export ANIMA_NOAUTH_URL
export ANIMA_SCREENSHOTS="$BUILD_DIR/console-screenshots"
export CHROMIUM
mkdir -p "$ANIMA_SCREENSHOTS"

status=0
node "$HERE/console/console_test.mjs" || status=$?
if [[ "$status" != 0 ]]; then
  echo "--- gateway log (tail)"
  tail -n 20 "$WORK/system/anima-gateway.log" || true
  if [[ -s "$ANIMA_PROCS/anima-gateway.restarted.log" ]]; then
    echo "--- restarted gateway log (tail)"
    tail -n 20 "$ANIMA_PROCS/anima-gateway.restarted.log"
  fi
fi
exit "$status"
