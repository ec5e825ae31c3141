#!/usr/bin/env bash
# The soak: the whole system (tools/bench/cluster.sh) for DURATION seconds under a steady load,
# sampled every minute, to see whether anything grows that should not. The load is anima-bench
# open loop (RATE msg/s of chat over CONNECTIONS WebSocket connections, half the path's measured
# capacity by default) plus chaos_client.py's mixed load (streamed and unary chat over WebSocket
# and HTTP, consciousness queries, a word_count flood, a self-coding job every 10 s), which also
# counts every answer. No faults. Not in CI.
#
#   tools/bench/soak.sh 3600                   # an hour
#   RATE=1000 WARMUP_MIN=5 tools/bench/soak.sh 1800
#
# Each minute: every service's RSS, open fds and threads (/proc), the gateways' WebSocket
# connections, and the mixed load's answered count and chat p50/p99 over that minute. The report
# is the per-minute table, then per service the growth from the end of the warm-up (WARMUP_MIN
# minutes, default 5) to the end: the goal is flat lines, under 5 %. Exit 1 if the mixed load
# saw anything unanswered, lost or answered twice, or a service exited; 4 if it could not start.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DURATION="${1:-3600}"
RATE="${RATE:-2000}"  # 2,500 with the mixed load on top was past what the path admits (8 % refused)
CONNECTIONS="${CONNECTIONS:-64}"
WARMUP_MIN="${WARMUP_MIN:-5}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/anima-soak.XXXXXX)}"
export CLUSTER_DIR="$OUT_DIR"
# shellcheck source=cluster.sh
source "$HERE/cluster.sh"
/usr/bin/python3 -c "import websockets" 2>/dev/null || {
  echo "soak.sh: needs python3-websockets (tools/anima deps installs it)" >&2
  exit 4
}
pids=()
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  cluster_stop
}
trap finish EXIT
trap 'exit 130' INT TERM
cluster_start || exit 4

gw0="127.0.0.1:${CLUSTER_PORT[anima-gateway-0]}"
gw1="127.0.0.1:${CLUSTER_PORT[anima-gateway-1]}"
"$CLUSTER_BIN/anima-bench" --url "ws://$gw0/" --rate "$RATE" --connections "$CONNECTIONS" \
  --warmup 5 --duration "$DURATION" >"$OUT_DIR/bench.txt" 2>&1 &
pids+=($!)
/usr/bin/python3 "$HERE/chaos_client.py" --ws="ws://$gw0/,ws://$gw1/" --http="http://$gw0,http://$gw1" \
  --duration="$DURATION" --events="$OUT_DIR/events.log" --json="$OUT_DIR/client.json" \
  --samples="$OUT_DIR/samples.jsonl" --sample-every=60 --job-every=10 \
  >"$OUT_DIR/client.txt" 2>"$OUT_DIR/client.log" &
client_pid=$!
pids+=("$client_pid")

samples="$OUT_DIR/minutes.tsv"
printf 'minute\tservice\trss_kib\tfds\tthreads\n' >"$samples"
minutes=$(((DURATION + 59) / 60))
exited=()
for ((m = 1; m <= minutes; m++)); do
  sleep 60
  for name in "${CLUSTER_ORDER[@]}"; do
    if ! kill -0 "${CLUSTER_PID[$name]}" 2>/dev/null; then
      exited+=("$name (minute $m)")
      continue
    fi
    read -r rss fds thr <<<"$(cluster_sample "$name")"
    printf '%d\t%s\t%s\t%s\t%s\n' "$m" "$name" "$rss" "$fds" "$thr" >>"$samples"
  done
  if ((${#exited[@]} > 0)); then break; fi
done
client_status=0
wait "$client_pid" || client_status=$?
wait "${pids[0]}" || true

echo "# Anima soak: $((DURATION / 60)) min, anima-bench open loop at $RATE msg/s over $CONNECTIONS connections, plus the mixed load"
echo
echo "Per minute (RSS KiB / fds / threads; mixed-load chats answered and p99 ms in that minute):"
/usr/bin/python3 - "$samples" "$OUT_DIR/samples.jsonl" "$WARMUP_MIN" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
loads = [json.loads(l) for l in open(sys.argv[2])] if sys.argv[2] else []
warm = int(sys.argv[3])
services = []
for r in rows:
    if r["service"] not in services:
        services.append(r["service"])
by = {(int(r["minute"]), r["service"]): r for r in rows}
minutes = sorted({int(r["minute"]) for r in rows})
short = {s: s.replace("anima-", "").replace("gateway-", "gw") for s in services}
print("min " + " ".join(f"{short[s]:>22}" for s in services) + "   answered  p99 ms")
for m in minutes:
    cells = []
    for s in services:
        r = by.get((m, s))
        cells.append(f"{r['rss_kib']}/{r['fds']}/{r['threads']}" if r else "-")
    load = loads[m - 1] if m - 1 < len(loads) else {}
    print(f"{m:>3} " + " ".join(f"{c:>22}" for c in cells) +
          f"   {load.get('answered', '-'):>8}  {load.get('p99_ms', '-')}")
print()
print(f"Growth from minute {warm} to minute {minutes[-1] if minutes else '-'} (goal: under 5 %):")
print(f"{'service':<18} {'rss KiB':>10} {'->':>2} {'rss KiB':>10} {'rss %':>7} {'fds':>5} {'->':>2} "
      f"{'fds':>5} {'thr':>4} {'->':>2} {'thr':>4}")
worst = 0.0
for s in services:
    a, b = by.get((warm, s)), by.get((minutes[-1], s)) if minutes else None
    if not a or not b:
        continue
    growth = 100.0 * (int(b["rss_kib"]) - int(a["rss_kib"])) / max(1, int(a["rss_kib"]))
    worst = max(worst, growth)
    print(f"{s:<18} {a['rss_kib']:>10} {'->':>2} {b['rss_kib']:>10} {growth:>6.1f}% {a['fds']:>5} "
          f"{'->':>2} {b['fds']:>5} {a['threads']:>4} {'->':>2} {b['threads']:>4}")
print(f"largest RSS growth after warm-up: {worst:.1f} %")
PY
echo
echo "anima-bench:"
grep -E "msg/s|p50|p99|errors|sent" "$OUT_DIR/bench.txt" | head -12 || true
echo
echo "mixed load (every answer counted):"
cat "$OUT_DIR/client.txt"
if ((${#exited[@]} > 0)); then echo "FAILED: services exited: ${exited[*]}"; fi
echo
echo "samples, logs and the client's JSON summary: $OUT_DIR"
if ((client_status == 0 && ${#exited[@]} == 0)); then exit 0; fi
exit 1
