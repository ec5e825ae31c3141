#!/usr/bin/env bash
# deploy/gcp/deploy.sh, the ops test scripts and the bench scripts: shellcheck-clean.
# deploy.sh: --dry-run prints every step and runs nothing; a real run
# against fake gcloud and kubectl creates what is missing, reuses what exists (idempotent), renders
# the overlay with this run's images and domain, and never prints a key; bad arguments exit 2.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
SCRIPT="$ANIMA_SOURCE_DIR/deploy/gcp/deploy.sh"
WORK="$(mktemp -d /tmp/anima-ops-deploy.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
status=0
fail() {
  echo "FAIL: $*"
  status=1
}

command -v shellcheck >/dev/null || { echo "FAIL: shellcheck missing (Debian package shellcheck)"; exit 1; }
if shellcheck -x -P SCRIPTDIR "$SCRIPT" "$HERE"/*.sh "$ANIMA_SOURCE_DIR"/tools/bench/*.sh \
  "$ANIMA_SOURCE_DIR"/tests/integration/openai_sdk/*.sh; then
  echo "ok: shellcheck finds nothing in deploy.sh, the ops test scripts and the bench scripts"
else
  fail "shellcheck"
fi

# Fakes that record every call; `describe` succeeds only for what FAKE_EXISTING names.
REAL_KUBECTL="$(command -v kubectl || true)"
mkdir -p "$WORK/bin"
cat >"$WORK/bin/gcloud" <<'SH'
#!/usr/bin/env bash
echo "gcloud $*" >>"$FAKE_LOG"
if [[ " $* " == *" describe "* ]]; then
  for what in ${FAKE_EXISTING:-}; do [[ " $* " == *" $what "* ]] && exit 0; done
  [[ "${FAKE_EXISTING:-}" == *images* && " $* " == *" images describe "* ]] && exit 0
  exit 1
fi
exit 0
SH
cat >"$WORK/bin/kubectl" <<SH
#!/usr/bin/env bash
echo "kubectl \$*" >>"\$FAKE_LOG"
for a in "\$@"; do
  case "\$a" in
    --kustomize=*) [[ -z "$REAL_KUBECTL" ]] || "$REAL_KUBECTL" kustomize "\${a#--kustomize=}" >"\$FAKE_RENDER" ;;
  esac
done
if [[ "\$1" == create ]]; then
  for a in "\$@"; do
    # The names of the keys, and the key file's mode; never the values.
    [[ "\$a" == --from-env-file=* ]] && cut -d= -f1 "\${a#*=}" && stat -c 'mode %a' "\${a#*=}"
    # A file becomes the Secret's data, as kubectl renders it.
    if [[ "\$a" == --from-file=* ]]; then
      spec="\${a#--from-file=}"
      printf -- '---\nmetadata: {name: %s}\ndata: {%s: %s}\n' "\$4" "\${spec%%=*}" "\$(base64 -w0 "\${spec#*=}")"
      stat -c 'mode %a' "\${spec#*=}" | sed 's/^/# /'
    fi
  done
fi
[[ "\$1" == apply && " \$* " == *" -f - "* ]] && cat >>"\$FAKE_STDIN"
# A keys file exists only where FAKE_EXISTING says so.
[[ "\$1" == get && " \$* " == *" secret anima-gateway-auth "* && "\${FAKE_EXISTING:-}" == *gateway-auth* ]] && echo e30=
exit 0
SH
chmod +x "$WORK/bin/gcloud" "$WORK/bin/kubectl"
export FAKE_LOG="$WORK/calls.log" FAKE_RENDER="$WORK/render.yaml" FAKE_STDIN="$WORK/stdin.log"

# 1. --dry-run: every command printed, none run, no key printed.
: >"$FAKE_LOG"
out="$(PATH="$WORK/bin:$PATH" OPENAI_API_KEY=sk-test-very-secret GEMINI_API_KEY=g-secret \
  "$SCRIPT" --dry-run --project=anima-test-1 --region=us-central1 --tag=t123 --domain=chat.example.org 2>&1)"
[[ -s "$FAKE_LOG" ]] && fail "--dry-run ran commands: $(cat "$FAKE_LOG")"
for expected in "gcloud services enable" "gcloud artifacts repositories create anima" \
  "gcloud container clusters create-auto anima --region=us-central1" \
  "gcloud container clusters get-credentials" "gcloud builds submit" \
  "_REGISTRY=us-central1-docker.pkg.dev/anima-test-1/anima" \
  "kubectl apply --server-side --field-manager=anima-deploy" \
  "kubectl create secret generic anima-provider-keys" "OPENAI_API_KEY GEMINI_API_KEY" \
  "kubectl create secret generic anima-gateway-auth" "kubectl create secret generic anima-admin-key" \
  "kubectl rollout status statefulset/anima-self-coding" 'value: ["chat.example.org"]' \
  "newName: us-central1-docker.pkg.dev/anima-test-1/anima/anima-gateway, newTag: \"t123\""; do
  grep -qF -- "$expected" <<<"$out" || fail "--dry-run does not print: $expected"
done
grep -q -e sk-test-very-secret -e g-secret <<<"$out" && fail "--dry-run printed a key"
echo "ok: --dry-run prints every step ($(grep -c '^+ ' <<<"$out") commands) and runs none"

# 2. A first run: everything missing is created; the overlay renders with this run's images.
: >"$FAKE_LOG"
mkdir -p "$WORK/tmpdir"
out="$(PATH="$WORK/bin:$PATH" TMPDIR="$WORK/tmpdir" OPENAI_API_KEY=sk-test-very-secret FAKE_EXISTING="" \
  "$SCRIPT" --project=anima-test-1 --tag=t123 --domain=chat.example.org 2>&1)" || fail "first run failed: $out"
for expected in "repositories create anima" "clusters create-auto anima" "builds submit" \
  "apply --server-side --field-manager=anima-keys" "rollout restart deployment/anima-llm-broker"; do
  grep -qF -- "$expected" "$FAKE_LOG" || fail "first run did not: $expected"
done
grep -q sk-test-very-secret <<<"$out" && fail "a run printed a key"
grep -q "OPENAI_API_KEY" "$FAKE_STDIN" || fail "the Secret applied does not carry OPENAI_API_KEY"
grep -q "mode 600" "$FAKE_STDIN" || fail "the key file is readable by others"
# The gateway's keys file: created with an admin key whose SHA-256 it holds; the key itself is
# only in anima-admin-key, never in the output.
admin_key="$(python3 -c 'import sys, yaml, base64
for d in yaml.safe_load_all(sys.stdin):
    if isinstance(d, dict) and d.get("metadata", {}).get("name") == "anima-admin-key":
        print(base64.b64decode(d["data"]["key"]).decode())' <"$FAKE_STDIN")"
[[ "$admin_key" == anima-* ]] || fail "no admin key was stored in anima-admin-key"
keys_json="$(python3 -c 'import sys, yaml, base64
for d in yaml.safe_load_all(sys.stdin):
    if isinstance(d, dict) and d.get("metadata", {}).get("name") == "anima-gateway-auth":
        print(base64.b64decode(d["data"]["keys.json"]).decode())' <"$FAKE_STDIN")"
admin_hash="$(printf '%s' "$admin_key" | sha256sum | cut -d' ' -f1)"
grep -q "$admin_hash" <<<"$keys_json" || fail "the keys file does not hold the admin key's SHA-256"
grep -qF "$admin_key" <<<"$keys_json" && fail "the keys file holds the admin key itself"
[[ -n "$admin_key" ]] && grep -qF "$admin_key" <<<"$out" && fail "a run printed the admin key"
grep -q "anima-admin-key" <<<"$out" || fail "a first run does not say where the admin key is"
grep -q "^# mode 600" "$FAKE_STDIN" || fail "the admin key file is readable by others"
[[ -z "$(ls -A "$WORK/tmpdir")" ]] || fail "the key file outlived the run"
if [[ -n "$REAL_KUBECTL" ]]; then
  grep -q "image: europe-west1-docker.pkg.dev/anima-test-1/anima/anima-router:t123" "$FAKE_RENDER" ||
    fail "the applied overlay does not use this run's images"
  grep -q "anima-project" "$FAKE_RENDER" && fail "the applied overlay still names the placeholder registry"
  grep -q -- "- chat.example.org" "$FAKE_RENDER" || fail "the applied certificate does not name the domain"
fi
echo "ok: a first run creates the repository, the cluster, the images, the Secret, and applies"

# 3. Again, with everything in place: nothing is created or rebuilt; no keys: Secret untouched.
: >"$FAKE_LOG"
PATH="$WORK/bin:$PATH" FAKE_EXISTING="anima images gateway-auth" OPENAI_API_KEY="" VENICE_API_KEY="" GEMINI_API_KEY="" \
  "$SCRIPT" --project=anima-test-1 --tag=t123 >/dev/null 2>&1 || fail "second run failed"
grep -E " create |create-auto|builds submit|anima-keys|anima-auth" "$FAKE_LOG" && fail "second run created or rebuilt something"
grep -q "apply --server-side --field-manager=anima-deploy" "$FAKE_LOG" || fail "second run did not apply"
echo "ok: a second run reuses the repository, cluster and images and leaves the Secret alone"

# 4. Bad arguments exit 2 with a message, before doing anything.
: >"$FAKE_LOG"
for args in "" "--project=X" "--project=anima-test-1 --tag=latest" "--project=anima-test-1 --bogus" \
  "--project=anima-test-1 --region=mars" "--project=anima-test-1 --domain=a;b"; do
  # shellcheck disable=SC2086
  if PATH="$WORK/bin:$PATH" "$SCRIPT" $args >/dev/null 2>"$WORK/err"; then
    fail "deploy.sh $args succeeded"
  else
    rc=$?
    [[ $rc -eq 2 ]] || fail "deploy.sh $args exited $rc, not 2"
    [[ -s "$WORK/err" ]] || fail "deploy.sh $args said nothing"
  fi
done
[[ -s "$FAKE_LOG" ]] && fail "bad arguments still ran commands"
echo "ok: bad arguments exit 2 before running anything"
exit "$status"
