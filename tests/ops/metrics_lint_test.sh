#!/usr/bin/env bash
# Starts every Anima service, sends chat, module, state, malformed and self-coding traffic, then
# checks each live /metrics: `promtool check metrics` finds nothing, every family follows the
# naming convention (DESIGN.md §2: anima_<part>_<what>_<unit>, _total counters, base units), and
# every family is documented in docs/metrics.md.
# Usage: metrics_lint_test.sh   (env ANIMA_BIN_DIR, ANIMA_SOURCE_DIR)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
: "${ANIMA_BIN_DIR:=$ANIMA_SOURCE_DIR/build/bin}"
# shellcheck source=system.sh
source "$HERE/system.sh"

command -v promtool >/dev/null || { echo "FAIL: promtool missing (Debian package prometheus)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/anima-ops-metrics.XXXXXX)"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  anima_stop_system
  rm -rf "$WORK"
}
trap cleanup EXIT
# A timeout (ctest) or Ctrl-C still stops every process started here.
trap 'exit 143' TERM INT

anima_start_system "$WORK/system"
anima_traffic
anima_self_coding || { echo "FAIL: the self-coding demo failed:" >&2; tail -n 20 "$WORK/system/self-coding-cli.log" >&2; exit 1; }

status=0
for name in anima-gateway anima-router anima-llm-broker anima-self-coding anima-llm-sim anima-word-count; do
  out="$WORK/$name.metrics"
  curl -fsS "http://127.0.0.1:${ANIMA_METRICS[$name]}/metrics" >"$out"
  if ! problems="$(promtool check metrics <"$out" 2>&1)"; then
    echo "FAIL: promtool check metrics on $name:"
    echo "$problems"
    status=1
  elif [[ -n "$problems" ]]; then
    echo "FAIL: promtool check metrics on $name reports:"
    echo "$problems"
    status=1
  else
    echo "ok: $name: promtool check metrics is clean ($(grep -c '^# TYPE' "$out") families)"
  fi
done

python3 "$HERE/metrics_naming.py" --self-test || status=1
python3 "$HERE/metrics_naming.py" "$ANIMA_SOURCE_DIR/docs/metrics.md" "$WORK"/*.metrics || status=1
exit "$status"
