#!/usr/bin/env bash
# Starts every Anima service and a real Prometheus (Debian's package) scraping them every second
# while chat, module and self-coding traffic flows; checks that every target is up and that every
# query of every Grafana dashboard and every Prometheus rule returns data.
# Usage: prometheus_live_test.sh   (env ANIMA_BIN_DIR, ANIMA_SOURCE_DIR)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
: "${ANIMA_BIN_DIR:=$ANIMA_SOURCE_DIR/build/bin}"
# shellcheck source=system.sh
source "$HERE/system.sh"

if ! command -v prometheus >/dev/null; then
  echo "FAIL: prometheus is not installed (Debian package prometheus; tools/anima deps)" >&2
  exit 1
fi

WORK="$(mktemp -d /tmp/anima-ops-prom.XXXXXX)"
PROM_PID=""
TRAFFIC_PID=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [[ -n "$TRAFFIC_PID" ]]; then
    kill "$TRAFFIC_PID" 2>/dev/null || true
    wait "$TRAFFIC_PID" 2>/dev/null || true
  fi
  if [[ -n "$PROM_PID" ]]; then
    kill -TERM "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
  fi
  anima_stop_system
  if [[ "${KEEP_WORK:-}" == 1 ]]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# A timeout (ctest) or Ctrl-C still stops every process started here.
trap 'exit 143' TERM INT

anima_start_system "$WORK/system"

# The scrape config: every service by its ready-file metrics port; the rules of
# deploy/prometheus/rules.yml with every group evaluated each second.
python3 - "$WORK" "$ANIMA_SOURCE_DIR/deploy/prometheus/rules.yml" \
  gateway="${ANIMA_METRICS[anima-gateway]}" router="${ANIMA_METRICS[anima-router]}" \
  llm-broker="${ANIMA_METRICS[anima-llm-broker]}" self-coding="${ANIMA_METRICS[anima-self-coding]}" \
  llm-sim="${ANIMA_METRICS[anima-llm-sim]}" word-count="${ANIMA_METRICS[anima-word-count]}" <<'PY'
import sys, yaml
work, rules_path, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
rules = yaml.safe_load(open(rules_path))
for g in rules["groups"]:
    g["interval"] = "1s"
yaml.safe_dump(rules, open(f"{work}/rules.yml", "w"))
config = {
    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
    "rule_files": [f"{work}/rules.yml"],
    "scrape_configs": [
        {"job_name": f"anima-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        for name, port in (t.split("=") for t in targets)],
}
yaml.safe_dump(config, open(f"{work}/prometheus.yml", "w"))
PY
promtool check config "$WORK/prometheus.yml" >/dev/null

PROM_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
PROM="http://127.0.0.1:$PROM_PORT"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!

# Traffic for the whole test: chat, a module call, a state query, a malformed frame, and a
# self-coding job, over and over.
(
  while true; do
    anima_traffic || echo "traffic round failed (see $WORK/system/cli.log)" >&2
    anima_self_coding || echo "self-coding round failed" >&2
    sleep 0.5
  done
) &
TRAFFIC_PID=$!

python3 - "$PROM" <<'PY'
import json, sys, time, urllib.request
url = sys.argv[1]
deadline = time.monotonic() + 30
last = "prometheus not answering"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=2) as r:
            targets = json.load(r)["data"]["activeTargets"]
        down = [f"{t['labels']['job']}: {t['health']} {t['lastError']}" for t in targets
                if t["health"] != "up"]
        if len(targets) == 6 and not down:
            print("ok: all 6 targets up:", ", ".join(sorted(t["labels"]["job"] for t in targets)))
            sys.exit(0)
        last = f"{len(targets)} targets, not up: {down}"
    except OSError as e:
        last = str(e)
    time.sleep(0.5)
print("FAIL: targets not all up after 30 s:", last)
sys.exit(1)
PY

status=0
python3 "$HERE/promql_queries.py" check "$PROM" 40 || status=1
exit "$status"
