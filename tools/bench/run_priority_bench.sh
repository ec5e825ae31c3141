#!/usr/bin/env bash
# The priority benchmark of docs/BENCHMARKS.md: starts the simulator, broker, example module,
# router (word_count at low priority) and gateway on their own ports, runs
# `anima-bench --scenario priority`, and stops everything it started, also on Ctrl-C.
# Extra arguments go to anima-bench (e.g. --rate 20 --duration 10 --flood-connections 8);
# GATEWAY_ARGS go to the gateway (e.g. GATEWAY_ARGS=--admission=false for the comparison run).
set -euo pipefail
# shellcheck source=services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

start anima-llm-sim --rules="$ROOT/tools/llm_sim/rules.json"
start anima-llm-broker --config="$ROOT/services/llm_broker/config.sim.json" \
  --openai-base-url="http://127.0.0.1:$(port anima-llm-sim http)/v1"
start anima-word-count
# The routing entry of the example module, with the scheduler's normal+low budget
# (ROUTER_MAX_IN_FLIGHT, default 64 as in the router's defaults).
python3 - "$ROOT/tools/word_count/router.json" "$(port anima-word-count grpc)" \
  "${ROUTER_MAX_IN_FLIGHT:-64}" >"$RUN/router.json" <<'PY'
import json, sys
config = json.load(open(sys.argv[1]))
config["modules"][0]["address"] = "127.0.0.1:" + sys.argv[2]
config["scheduler"] = {"max_in_flight": int(sys.argv[3])}
print(json.dumps(config))
PY
start anima-router --broker="127.0.0.1:$(port anima-llm-broker grpc)" --config="$RUN/router.json"
# The per-connection message rate limit would stop the flood at the gateway, before the
# scheduler it is meant to load; the benchmark lifts it.
# shellcheck disable=SC2086  # GATEWAY_ARGS is a list of flags
start anima-gateway --router="127.0.0.1:$(port anima-router grpc)" \
  --messages-per-second=1000000 ${GATEWAY_ARGS:-}
"$BIN/anima-bench" --scenario priority --url "ws://127.0.0.1:$(port anima-gateway http)/" \
  --message "Hello, consciousness system!" "$@"
