#!/usr/bin/env bash
# The chaos run, bounded: tools/bench/chaos.sh for 75 s of mixed load with a fault every 9 s
# (SIGKILL of the broker, router, self-coding, word-count and a gateway, each started again, then
# SIGTERM of the other gateway). chaos.sh fails on any request unanswered or answered twice, any
# job event lost or repeated, any exit nobody asked for; this test also checks that the run
# really carried load through every fault (every lane sent and was answered, jobs ran, all six
# faults happened and each service served again after its restart).
# A job every 2 s, so that a kill or the drain usually finds one streaming (watched again).
set -euo pipefail
SRC="${ANIMA_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export ANIMA_BIN_DIR="${ANIMA_BIN_DIR:-$SRC/build/bin}"
if ! /usr/bin/python3 -c "import websockets" 2>/dev/null; then
  echo "SKIP: python3-websockets is not installed (tools/anima deps installs it)"
  exit 77
fi
OUT_DIR="$(mktemp -d /tmp/anima-chaos-test.XXXXXX)"
export OUT_DIR
trap 'rm -rf "$OUT_DIR"' EXIT

status=0
CLIENT_ARGS="--job-every 2" PERIOD=9 WARMUP=6 DOWN_MS=500 "$SRC/tools/bench/chaos.sh" 75 >"$OUT_DIR/report.txt" 2>"$OUT_DIR/chaos.log" ||
  status=$?
cat "$OUT_DIR/report.txt"
if ((status != 0)); then
  echo "FAIL: chaos.sh exited $status; its log:"
  tail -30 "$OUT_DIR/chaos.log"
  for log in "$OUT_DIR"/*.log; do
    echo "--- the end of $log"
    tail -5 "$log"
  done
  exit 1
fi

/usr/bin/python3 - "$OUT_DIR/client.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
problems = []
for lane in ("ws_chat", "ws_stream", "http_chat", "http_stream", "query", "flood"):
    l = summary["lanes"].get(lane)
    if not l or l["sent"] < 20 or l["ok"] < l["sent"] * 0.5:
        problems.append(f"lane {lane} carried too little: {l}")
jobs = summary["jobs"]
if jobs.get("accepted", 0) < 3 or jobs.get("missing_events", 1) != 0 or jobs.get("repeated_events", 1) != 0:
    problems.append(f"jobs: {jobs}")
faults = summary["faults"]
# One round of the schedule at least; a second round may begin too close to the end for its
# service to serve again before the load stops, so only the first round must have recovered.
if len(faults) < 6:
    problems.append(f"{len(faults)} faults, not the schedule's 6: {faults}")
for f in faults[:6]:
    if f.get("recovery_ms") is None:
        problems.append(f"{f['service']} never served again after its {f['signal']}")
for p in problems:
    print("FAIL:", p)
sys.exit(1 if problems else 0)
PY
echo "ok: every request answered once, every job event delivered once, every service back"
