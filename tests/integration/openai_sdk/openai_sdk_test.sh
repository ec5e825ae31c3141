#!/usr/bin/env bash
# The official openai npm client against the real gateway, router, broker and simulator, with a
# keys file: RateLimitError with OpenAI's headers for a rate, insufficient_quota for a budget,
# AuthenticationError for a wrong key (sdk_test.mjs).
#
# openai is installed once, at the version of package-lock.json, into ANIMA_OPS_CACHE (default
# <source>/.anima/ops-cache, gitignored). Exits 77 (ctest: skipped) only when node is missing or
# npm cannot reach its registry.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../../.." && pwd)}"
CACHE="${ANIMA_OPS_CACHE:-$ANIMA_SOURCE_DIR/.anima/ops-cache}/openai-sdk"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node or npm is missing"
  exit 77
fi

# shellcheck source=../../ops/npm_pinned.sh
source "$ANIMA_SOURCE_DIR/tests/ops/npm_pinned.sh"
npm_pinned_install "$HERE" "$CACHE" openai

BIN="${ANIMA_BIN_DIR:-$ANIMA_SOURCE_DIR/build/bin}"
# shellcheck source=../../../tools/bench/services.sh
source "$ANIMA_SOURCE_DIR/tools/bench/services.sh"

hash_of() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
cat >"$RUN/keys.json" <<JSON
{"tiers": {"limited": {"requests_per_minute": 2}, "budget": {"tokens_per_day": 5}},
 "principals": {"app": {"tier": "limited"}, "poor": {"tier": "budget"}},
 "keys": [{"principal": "app", "sha256": "$(hash_of sk-limited)"},
          {"principal": "poor", "sha256": "$(hash_of sk-budget)"}]}
JSON

start anima-llm-sim --rules="$ANIMA_SOURCE_DIR/tests/testdata/sim_rules.json"
start anima-llm-broker --config="$ANIMA_SOURCE_DIR/services/llm_broker/config.sim.json" \
  --openai-base-url="http://127.0.0.1:$(port anima-llm-sim http)/v1"
start anima-router --broker="127.0.0.1:$(port anima-llm-broker grpc)"
start anima-gateway --router="127.0.0.1:$(port anima-router grpc)" --auth-keys-file="$RUN/keys.json"

cd "$CACHE"
cp "$HERE/sdk_test.mjs" "$CACHE/sdk_test.mjs"
node "$CACHE/sdk_test.mjs" "http://127.0.0.1:$(port anima-gateway http)/v1" sk-limited sk-budget
