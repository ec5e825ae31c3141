#!/usr/bin/env bash
# Starts the whole Anima system on free ports for the ops tests, and stops it again.
# Sourced, not run: defines anima_start_system, anima_traffic, anima_stop_system and fills
# ANIMA_METRICS[<service>]=port, ANIMA_PORT[<service>]=port.
#
# Needs ANIMA_BIN_DIR (the build's bin/) and ANIMA_SOURCE_DIR. Every process is started here and
# stopped by its pid in anima_stop_system; nothing is killed by name.

# shellcheck disable=SC2034  # read by the scripts that source this one
declare -gA ANIMA_METRICS=()
declare -gA ANIMA_PORT=()
declare -ga ANIMA_PIDS=()

# ready_port FILE KEY: prints the port named KEY in a ready file ({"grpc":..,"metrics":..}).
ready_port() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# anima_start NAME KEY ARGS...: starts build/bin/NAME with free ports and waits for its ready file.
# KEY is the ready-file field of its main port (grpc or http).
anima_start() {
  local name="$1" key="$2"
  shift 2
  local ready="$ANIMA_WORK/$name.ready"
  "$ANIMA_BIN_DIR/$name" --port=0 --metrics-port=0 --ready-file="$ready" "$@" \
    >"$ANIMA_WORK/$name.log" 2>&1 &
  local pid=$!
  ANIMA_PIDS+=("$pid")
  local i
  for ((i = 0; i < 300; i++)); do
    if [[ -s "$ready" ]] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$ready" 2>/dev/null; then
      ANIMA_PORT[$name]="$(ready_port "$ready" "$key")"
      ANIMA_METRICS[$name]="$(ready_port "$ready" metrics)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "FAIL: $name exited before it was ready; its log:" >&2
      tail -n 30 "$ANIMA_WORK/$name.log" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "FAIL: $name not ready after 15 s; see $ANIMA_WORK/$name.log" >&2
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# anima_start_state: redis-server and PostgreSQL 15 on free ports, so that the services run with
# shared state as deployed (the gateway's quotas and the router's memory on Redis, self-coding's
# jobs on PostgreSQL) and export the store metrics. Sets ANIMA_REDIS_URL and ANIMA_POSTGRES_URL,
# each empty when its package is missing (the services then use their embedded defaults).
# PostgreSQL refuses to run as root: as root it runs as Debian's `postgres` user, with its
# cluster in a directory of its own under /tmp.
anima_start_state() {
  ANIMA_REDIS_URL="" ANIMA_POSTGRES_URL="" ANIMA_PG_DIR=""
  local port i
  if command -v redis-server >/dev/null; then
    port="$(free_port)"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$ANIMA_WORK" \
      >"$ANIMA_WORK/redis.log" 2>&1 &
    ANIMA_PIDS+=("$!")
    for ((i = 0; i < 100; i++)); do
      if redis-cli -p "$port" ping >/dev/null 2>&1; then
        ANIMA_REDIS_URL="redis://127.0.0.1:$port"
        break
      fi
      sleep 0.1
    done
    [[ -n "$ANIMA_REDIS_URL" ]] || { echo "FAIL: redis-server did not start" >&2; return 1; }
  fi
  local bin=/usr/lib/postgresql/15/bin as=()
  if [[ -x "$bin/postgres" ]]; then
    ANIMA_PG_DIR="$(mktemp -d /tmp/anima-ops-pg.XXXXXX)"
    if [[ $(id -u) -eq 0 ]]; then
      chown postgres:postgres "$ANIMA_PG_DIR"
      as=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
    "${as[@]}" "$bin/initdb" -D "$ANIMA_PG_DIR/data" -U anima --auth=trust -E UTF8 \
      --locale=C.UTF-8 >"$ANIMA_WORK/postgres.log" 2>&1 ||
      { echo "FAIL: initdb; see $ANIMA_WORK/postgres.log" >&2; return 1; }
    port="$(free_port)"
    "${as[@]}" "$bin/postgres" -D "$ANIMA_PG_DIR/data" -p "$port" -k "$ANIMA_PG_DIR" \
      -c listen_addresses=127.0.0.1 -c fsync=off >>"$ANIMA_WORK/postgres.log" 2>&1 &
    ANIMA_PIDS+=("$!")
    for ((i = 0; i < 150; i++)); do
      if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        ANIMA_POSTGRES_URL="postgresql://anima@127.0.0.1:$port/postgres"
        break
      fi
      sleep 0.1
    done
    [[ -n "$ANIMA_POSTGRES_URL" ]] || { echo "FAIL: PostgreSQL did not start" >&2; return 1; }
  fi
}

# anima_start_system WORKDIR: Redis and PostgreSQL (when installed), sim, broker, self-coding,
# word-count, router (with the word-count module routed), gateway.
anima_start_system() {
  ANIMA_WORK="$1"
  # self-coding makes its data directory itself, private (0700).
  mkdir -p "$ANIMA_WORK"
  anima_start_state || return 1
  local redis=() postgres=()
  [[ -z "$ANIMA_REDIS_URL" ]] || redis=(--redis="$ANIMA_REDIS_URL")
  [[ -z "$ANIMA_POSTGRES_URL" ]] || postgres=(--postgres="$ANIMA_POSTGRES_URL")
  anima_start anima-llm-sim http --rules="$ANIMA_SOURCE_DIR/tests/testdata/self_coding_rules.json" || return 1
  anima_start anima-llm-broker grpc --config="$ANIMA_SOURCE_DIR/services/llm_broker/config.sim.json" \
    --openai-base-url="http://127.0.0.1:${ANIMA_PORT[anima-llm-sim]}/v1" \
    --venice-base-url="http://127.0.0.1:${ANIMA_PORT[anima-llm-sim]}/api/v1" \
    --gemini-base-url="http://127.0.0.1:${ANIMA_PORT[anima-llm-sim]}/v1beta" || return 1
  local broker="127.0.0.1:${ANIMA_PORT[anima-llm-broker]}"
  anima_start anima-self-coding grpc --broker="$broker" --data-dir="$ANIMA_WORK/self-coding" \
    "${postgres[@]}" || return 1
  anima_start anima-word-count grpc || return 1
  cat >"$ANIMA_WORK/router.json" <<JSON
{"modules": [{"name": "word-count", "address": "127.0.0.1:${ANIMA_PORT[anima-word-count]}",
              "types": ["word_count"], "priority": "low", "deadline_ms": 5000}]}
JSON
  anima_start anima-router grpc --broker="$broker" \
    --self-coding="127.0.0.1:${ANIMA_PORT[anima-self-coding]}" --config="$ANIMA_WORK/router.json" \
    --poll-interval-ms=500 "${redis[@]}" || return 1
  # Auth on, as deployed: "ops" (admin, no quotas) carries the traffic; "capped" has a token
  # budget of one answer, so every round also meets a quota refusal.
  local ops_hash capped_hash
  ops_hash="$(printf '%s' ops-key | sha256sum | cut -d' ' -f1)"
  capped_hash="$(printf '%s' capped-key | sha256sum | cut -d' ' -f1)"
  cat >"$ANIMA_WORK/keys.json" <<JSON
{"tiers": {"capped": {"tokens_per_day": 1}},
 "principals": {"ops": {"role": "admin"}, "capped": {"tier": "capped"}},
 "keys": [{"principal": "ops", "sha256": "$ops_hash"},
          {"principal": "capped", "sha256": "$capped_hash"}]}
JSON
  anima_start anima-gateway http --router="127.0.0.1:${ANIMA_PORT[anima-router]}" \
    --auth-keys-file="$ANIMA_WORK/keys.json" "${redis[@]}" || return 1
}

# anima_traffic: one round of chat (plain and streamed), a word_count, a state query, a malformed
# frame and an oversized one, a chat over a principal's budget and one with a wrong key.
anima_traffic() {
  local url="ws://127.0.0.1:${ANIMA_PORT[anima-gateway]}/"
  local cli=("$ANIMA_BIN_DIR/anima-cli" --token ops-key)
  "$ANIMA_BIN_DIR/anima-cli" --token capped-key --url "$url" chat "Hello from a capped key" \
    >>"$ANIMA_WORK/cli.log" 2>&1 || true
  "$ANIMA_BIN_DIR/anima-cli" --token wrong-key --url "$url" chat "Hello" >>"$ANIMA_WORK/cli.log" 2>&1 || true
  "${cli[@]}" --url "$url" chat "Hello, consciousness system!" >>"$ANIMA_WORK/cli.log" 2>&1 || return 1
  "${cli[@]}" --url "$url" chat --stream "Tell me a story" >>"$ANIMA_WORK/cli.log" 2>&1 || return 1
  # Every provider, so the providers dashboard has more than one.
  local p
  for p in venice gemini; do
    "${cli[@]}" --url "$url" chat --provider "$p" "Hello from $p" >>"$ANIMA_WORK/cli.log" 2>&1 || true
  done
  "${cli[@]}" send --timeout-ms=3000 --url "$url" '{"type":"word_count","id":"w1","text":"one two two"}' \
    >>"$ANIMA_WORK/cli.log" 2>&1 || true
  "${cli[@]}" send --url "$url" '{"type":"consciousness_query","id":"q1"}' >>"$ANIMA_WORK/cli.log" 2>&1 || true
  "${cli[@]}" send --url "$url" '{"type":"chat","id":"bad"}' >>"$ANIMA_WORK/cli.log" 2>&1 || true
  # A frame over the gateway's 64 KiB limit: too_large, and the connection closes (a limit hit).
  "${cli[@]}" send --timeout-ms=3000 --url "$url" \
    "{\"type\":\"chat\",\"id\":\"big\",\"message\":\"$(head -c 70000 /dev/zero | tr '\0' a)\"}" \
    >>"$ANIMA_WORK/cli.log" 2>&1 || true
  curl -fsS "http://127.0.0.1:${ANIMA_PORT[anima-gateway]}/readyz" >/dev/null || return 1
}

# anima_self_coding: the self-coding demo (its first attempt fails, the second passes).
anima_self_coding() {
  local url="ws://127.0.0.1:${ANIMA_PORT[anima-gateway]}/"
  "$ANIMA_BIN_DIR/anima-cli" --token ops-key send --url "$url" \
    "$(cat "$ANIMA_SOURCE_DIR/docs/examples/self-coding-demo.json")" >>"$ANIMA_WORK/self-coding-cli.log" 2>&1
}

anima_stop_system() {
  local pid
  for pid in "${ANIMA_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${ANIMA_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ANIMA_PIDS=()
  [[ -z "${ANIMA_PG_DIR:-}" ]] || rm -rf "$ANIMA_PG_DIR"
}
