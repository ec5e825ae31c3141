#!/usr/bin/env bash
# deploy/gcp/deploy.sh, the ops test scripts and the bench scripts: shellcheck-clean.
# deploy.sh: --dry-run prints every step and runs nothing; a real run
# against fake gcloud and kubectl creates what is missing, reuses what exists (idempotent), renders
# the overlay with this run's images and domain, and never prints a key; bad arguments exit 2.
# Shared state: Memorystore and Cloud SQL created or reused on a private services access range,
# the database user's password generated, set on the user and stored in the Secret anima-state
# with the Redis AUTH string, neither ever printed; the NetworkPolicies narrowed to the range;
# with --cloud-sql-proxy, the proxy overlay with its Workload Identity. Self-coding's sandboxes: a
# gVisor node pool on a Standard cluster (none on Autopilot), Agent Sandbox's pinned release
# installed and waited for before the manifests, the runner image mapped, and self-coding's egress
# to the API server narrowed to the cluster's endpoint.
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
# What the shared-state queries answer (gcloud's value() format: tab-separated).
cat >"$WORK/bin/gcloud" <<'SH'
#!/usr/bin/env bash
echo "gcloud $*" >>"$FAKE_LOG"
case " $* " in
  *" vpc-peerings list "*) printf '%s\n' "${FAKE_PEERED:-}"; exit 0 ;;
  *" compute addresses describe "*--format=*) printf '10.20.0.0\t16\n'; exit 0 ;;
  *" clusters describe "*--format=*) echo "${FAKE_AUTOPILOT-True}"; exit 0 ;;
  *" redis instances describe "*--format=*) printf '10.20.0.3\t6379\n'; exit 0 ;;
  *" get-auth-string "*) echo "fake-redis-auth-5e3c"; exit 0 ;;
  *" sql instances describe "*--format=*) printf 'PRIMARY\t34.1.2.3\tPRIVATE\t10.20.1.5\t\t\n'; exit 0 ;;
  *" sql users list "*) [[ "${FAKE_EXISTING:-}" != *sql-user* ]] || echo anima; exit 0 ;;
esac
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
# The control plane's endpoint, behind the kubernetes Service.
[[ "\$1" == get && " \$* " == *" endpointslices "* ]] && printf '172.16.0.2 443'
# A keys file exists only where FAKE_EXISTING says so.
[[ "\$1" == get && " \$* " == *" secret anima-gateway-auth "* && "\${FAKE_EXISTING:-}" == *gateway-auth* ]] && echo e30=
# So do the state URLs (reaching PostgreSQL directly).
if [[ "\$1" == get && " \$* " == *" secret anima-state "* && "\${FAKE_EXISTING:-}" == *state* ]]; then
  case "\$*" in
    *redis-url*) printf 'redis://:a@10.20.0.3:6379/0' | base64 -w0 ;;
    *postgres-url*) printf 'postgresql://anima:p@10.20.1.5:5432/anima?sslmode=require' | base64 -w0 ;;
  esac
fi
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
  "kubectl rollout status deployment/anima-self-coding" 'value: ["chat.example.org"]' \
  "newName: us-central1-docker.pkg.dev/anima-test-1/anima/anima-gateway, newTag: \"t123\"" \
  "gcloud services enable" "redis.googleapis.com" "sqladmin.googleapis.com" "servicenetworking.googleapis.com" \
  "gcloud compute addresses create anima-private-services --global --purpose=VPC_PEERING" \
  "gcloud services vpc-peerings list" "gcloud services vpc-peerings connect --service=servicenetworking.googleapis.com --ranges=anima-private-services" \
  "gcloud redis instances describe anima --region=us-central1" \
  "gcloud redis instances create anima --region=us-central1" "--connect-mode=private-service-access" \
  "--reserved-ip-range=anima-private-services" "--enable-auth" "--redis-version=redis_7_0" \
  "gcloud sql instances describe anima" "gcloud sql instances create anima" "--database-version=POSTGRES_15" \
  "--no-assign-ip" "--allocated-ip-range-name=anima-private-services" "--enable-point-in-time-recovery" \
  "gcloud sql databases create anima --instance=anima" "gcloud sql users list --instance=anima" \
  "gcloud sql users create anima --instance=anima" "gcloud redis instances get-auth-string anima" \
  "kubectl create secret generic anima-state" "--field-manager=anima-state" \
  "kubectl rollout restart deployment/anima-gateway deployment/anima-router deployment/anima-self-coding" \
  "kubectl delete statefulset anima-self-coding" "name: anima-redis-egress" "name: anima-postgres-egress" \
  "gcloud container node-pools describe anima-gvisor --cluster=anima --region=us-central1" \
  "gcloud container node-pools create anima-gvisor --cluster=anima --region=us-central1" "--sandbox=type=gvisor" \
  "--machine-type=e2-standard-4" \
  "kubectl apply --server-side --field-manager=anima-agent-sandbox --force-conflicts -f https://github.com/kubernetes-sigs/agent-sandbox/releases/download/v0.5.6/sandbox-with-extensions.yaml" \
  "kubectl wait --for=condition=Established --timeout=2m crd/sandboxes.agents.x-k8s.io crd/sandboxclaims.extensions.agents.x-k8s.io crd/sandboxtemplates.extensions.agents.x-k8s.io crd/sandboxwarmpools.extensions.agents.x-k8s.io" \
  "kubectl rollout status deployment/agent-sandbox-controller --namespace=agent-sandbox-system" \
  "kubectl get endpointslices --namespace=default --selector=kubernetes.io/service-name=kubernetes" \
  "name: anima-kube-api-egress" \
  "newName: us-central1-docker.pkg.dev/anima-test-1/anima/anima-sandbox-runner, newTag: \"t123\"" \
  "kubectl get sandboxwarmpool anima-runner"; do
  grep -qF -- "$expected" <<<"$out" || fail "--dry-run does not print: $expected"
done
# The release installed is the one whose CRDs validate the manifests (tests/ops/k8s/crds/).
version="$(sed -n 's/^AGENT_SANDBOX_VERSION="\(.*\)"$/\1/p' "$SCRIPT")"
[[ -n "$version" && -d "$HERE/k8s/crds/agent-sandbox-$version" ]] ||
  fail "deploy.sh installs Agent Sandbox '$version', but tests/ops/k8s/crds/ has no agent-sandbox-$version"
# Agent Sandbox is installed and its CRDs Established before the manifests that use them apply.
installed="$(grep -n "crd/sandboxwarmpools" <<<"$out" | head -1 | cut -d: -f1)"
applied="$(grep -n -- "--field-manager=anima-deploy" <<<"$out" | head -1 | cut -d: -f1)"
[[ -n "$installed" && -n "$applied" && "$installed" -lt "$applied" ]] ||
  fail "--dry-run applies the manifests before Agent Sandbox's CRDs are Established"
grep -q -e sk-test-very-secret -e g-secret <<<"$out" && fail "--dry-run printed a key"
grep -- "--password=" <<<"$out" | grep -v "never" && fail "--dry-run printed a password"
grep -q statefulset/ <<<"$out" && fail "--dry-run still waits for a StatefulSet"
echo "ok: --dry-run prints every step ($(grep -c '^+ ' <<<"$out") commands) and runs none"

# 2. A first run: everything missing is created; the overlay renders with this run's images.
: >"$FAKE_LOG"
mkdir -p "$WORK/tmpdir"
out="$(PATH="$WORK/bin:$PATH" TMPDIR="$WORK/tmpdir" OPENAI_API_KEY=sk-test-very-secret FAKE_EXISTING="" \
  "$SCRIPT" --project=anima-test-1 --tag=t123 --domain=chat.example.org 2>&1)" || fail "first run failed: $out"
for expected in "repositories create anima" "clusters create-auto anima" "builds submit" \
  "apply --server-side --field-manager=anima-keys" "rollout restart deployment/anima-llm-broker" \
  "apply --server-side --field-manager=anima-agent-sandbox --force-conflicts -f https://github.com/kubernetes-sigs/agent-sandbox/releases/download/v0.5.6/" \
  "wait --for=condition=Established" "rollout status deployment/agent-sandbox-controller"; do
  grep -qF -- "$expected" "$FAKE_LOG" || fail "first run did not: $expected"
done
grep -q "node-pools" "$FAKE_LOG" && fail "on Autopilot, the first run touched node pools"
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
grep "^# mode" "$FAKE_STDIN" | grep -v "mode 600" && fail "a secret file is readable by others"
[[ -z "$(ls -A "$WORK/tmpdir")" ]] || fail "the key file outlived the run"
# Shared state: created on the range; the URLs in anima-state; the password set on the user is the
# one in the URL; neither it nor the AUTH string printed.
for expected in "compute addresses create anima-private-services" \
  "vpc-peerings connect --service=servicenetworking.googleapis.com --ranges=anima-private-services --network=default" \
  "redis instances create anima --region=europe-west1" "sql instances create anima" \
  "sql databases create anima" "sql users create anima" \
  "apply --server-side --field-manager=anima-state" \
  "rollout restart deployment/anima-gateway deployment/anima-router deployment/anima-self-coding"; do
  grep -qF -- "$expected" "$FAKE_LOG" || fail "first run did not: $expected"
done
# state_url KEY: a key of the Secret anima-state as applied.
state_url() {
  python3 -c 'import sys, yaml, base64
for d in yaml.safe_load_all(open(sys.argv[1])):
    if isinstance(d, dict) and d.get("metadata", {}).get("name") == "anima-state" and sys.argv[2] in d["data"]:
        print(base64.b64decode(d["data"][sys.argv[2]]).decode())' "$FAKE_STDIN" "$1"
}
[[ "$(state_url redis-url)" == "redis://:fake-redis-auth-5e3c@10.20.0.3:6379/0" ]] ||
  fail "redis-url is '$(state_url redis-url)', not Memorystore's host, port and AUTH string"
postgres_url="$(state_url postgres-url)"
password="$(sed -nE 's#^postgresql://anima:([0-9a-f]{48})@10\.20\.1\.5:5432/anima\?sslmode=require$#\1#p' <<<"$postgres_url")"
if [[ -z "$password" ]]; then
  fail "postgres-url is '$postgres_url', not the private IP with a generated password and TLS"
else
  grep -qF -- "sql users create anima --instance=anima --project=anima-test-1 --password=$password" "$FAKE_LOG" ||
    fail "the database user did not get the password of postgres-url"
  grep -qF -- "$password" <<<"$out" && fail "a run printed the database password"
fi
grep -qF fake-redis-auth-5e3c <<<"$out" && fail "a run printed Redis's AUTH string"
if [[ -n "$REAL_KUBECTL" ]]; then
  python3 - "$FAKE_RENDER" <<'PY' || fail "the NetworkPolicies of the engines are not narrowed to the range"
import sys, yaml
objs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
for name in ("anima-redis-egress", "anima-postgres-egress"):
    to = objs[("NetworkPolicy", name)]["spec"]["egress"][0]["to"]
    assert to == [{"ipBlock": {"cidr": "10.20.0.0/16"}}], (name, to)
PY
fi
if [[ -n "$REAL_KUBECTL" ]]; then
  python3 - "$FAKE_RENDER" <<'PY' || fail "self-coding's egress to the API server is not narrowed to the endpoint"
import sys, yaml
objs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
egress = objs[("NetworkPolicy", "anima-kube-api-egress")]["spec"]["egress"]
assert egress == [{"to": [{"ipBlock": {"cidr": "172.16.0.2/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}], egress
PY
  grep -q "image: europe-west1-docker.pkg.dev/anima-test-1/anima/anima-router:t123" "$FAKE_RENDER" ||
    fail "the applied overlay does not use this run's images"
  grep -q "image: europe-west1-docker.pkg.dev/anima-test-1/anima/anima-sandbox-runner:t123" "$FAKE_RENDER" ||
    fail "the applied runner template does not use this run's runner image"
  grep -q "anima-project" "$FAKE_RENDER" && fail "the applied overlay still names the placeholder registry"
  grep -q -- "- chat.example.org" "$FAKE_RENDER" || fail "the applied certificate does not name the domain"
fi
echo "ok: a first run creates the repository, the cluster, the images, the Secret, and applies"

# 3. Again, with everything in place: nothing is created or rebuilt; no keys: Secrets untouched.
: >"$FAKE_LOG"
PATH="$WORK/bin:$PATH" FAKE_EXISTING="anima anima-private-services images gateway-auth state sql-user" \
  FAKE_PEERED="other-range,anima-private-services" \
  OPENAI_API_KEY="" VENICE_API_KEY="" GEMINI_API_KEY="" \
  "$SCRIPT" --project=anima-test-1 --tag=t123 >/dev/null 2>&1 || fail "second run failed"
grep -E " create |create-auto|builds submit|anima-keys|anima-auth|manager=anima-state|set-password|vpc-peerings (connect|update)|rollout restart" \
  "$FAKE_LOG" && fail "second run created, rebuilt or rewrote something"
grep -q "apply --server-side --field-manager=anima-deploy" "$FAKE_LOG" || fail "second run did not apply"
echo "ok: a second run reuses the repository, cluster, images, Memorystore, Cloud SQL and the Secrets"

# 3a. A Standard cluster of the operator's: the gVisor node pool is created once, then reused.
: >"$FAKE_LOG"
PATH="$WORK/bin:$PATH" FAKE_AUTOPILOT="" FAKE_EXISTING="anima anima-private-services images gateway-auth state sql-user" \
  FAKE_PEERED="anima-private-services" "$SCRIPT" --project=anima-test-1 --tag=t123 --gvisor-machine-type=n2-standard-8 \
  >"$WORK/out" 2>&1 || fail "run on a Standard cluster failed: $(cat "$WORK/out")"
grep -qF -- "container node-pools create anima-gvisor --cluster=anima --region=europe-west1 --project=anima-test-1 --sandbox=type=gvisor --image-type=cos_containerd --machine-type=n2-standard-8" \
  "$FAKE_LOG" || fail "on a Standard cluster, no gVisor node pool was created"
: >"$FAKE_LOG"
PATH="$WORK/bin:$PATH" FAKE_AUTOPILOT="" FAKE_EXISTING="anima anima-gvisor anima-private-services images gateway-auth state sql-user" \
  FAKE_PEERED="anima-private-services" "$SCRIPT" --project=anima-test-1 --tag=t123 >/dev/null 2>&1 ||
  fail "second run on a Standard cluster failed"
grep -q "node-pools create" "$FAKE_LOG" && fail "the gVisor node pool was created again"
grep -q "node-pools describe anima-gvisor" "$FAKE_LOG" || fail "the gVisor node pool was not looked for"
echo "ok: on a Standard cluster the gVisor node pool is created once; on Autopilot none"

# 3b. The Secret lost (a new cluster), the user there: its password is reset to a new one, stored;
# a network already peered for other ranges keeps them.
: >"$FAKE_LOG"
: >"$FAKE_STDIN"
PATH="$WORK/bin:$PATH" FAKE_EXISTING="anima images gateway-auth sql-user" FAKE_PEERED="google-managed-services-default" \
  "$SCRIPT" --project=anima-test-1 --tag=t123 >"$WORK/out" 2>&1 || fail "run without the Secret failed: $(cat "$WORK/out")"
grep -q "sql users set-password anima --instance=anima" "$FAKE_LOG" || fail "the existing user's password was not reset"
grep -q "sql users create" "$FAKE_LOG" && fail "the existing user was created again"
grep -q "vpc-peerings update --service=servicenetworking.googleapis.com --ranges=google-managed-services-default,anima-private-services" \
  "$FAKE_LOG" || fail "the peering did not keep its ranges and add ours"
new_password="$(sed -nE 's#^postgresql://anima:([0-9a-f]{48})@.*#\1#p' <<<"$(state_url postgres-url)")"
[[ -n "$new_password" && "$new_password" != "$password" ]] || fail "no new password was stored"
grep -qF -- "--password=$new_password" "$FAKE_LOG" || fail "the user's new password is not the stored one"
[[ -n "$new_password" ]] && grep -qF -- "$new_password" "$WORK/out" && fail "a run printed the new password"
echo "ok: without the Secret, the existing user's password is reset and stored, never printed"

# 3c. --cloud-sql-proxy: Workload Identity for the proxy, the proxy overlay with this instance, and
# postgres-url through the sidecar (rewritten, as the Secret pointed at the private IP).
: >"$FAKE_LOG"
: >"$FAKE_STDIN"
PATH="$WORK/bin:$PATH" FAKE_EXISTING="anima images gateway-auth state sql-user" FAKE_PEERED="anima-private-services" \
  "$SCRIPT" --project=anima-test-1 --tag=t123 --cloud-sql-proxy >"$WORK/out" 2>&1 || fail "--cloud-sql-proxy failed: $(cat "$WORK/out")"
for expected in "iam service-accounts create anima-cloud-sql --project=anima-test-1" \
  "projects add-iam-policy-binding anima-test-1 --member=serviceAccount:anima-cloud-sql@anima-test-1.iam.gserviceaccount.com --role=roles/cloudsql.client" \
  "iam service-accounts add-iam-policy-binding anima-cloud-sql@anima-test-1.iam.gserviceaccount.com --project=anima-test-1 --role=roles/iam.workloadIdentityUser --member=serviceAccount:anima-test-1.svc.id.goog[anima/anima-cloud-sql]" \
  "iam service-accounts add-iam-policy-binding anima-cloud-sql@anima-test-1.iam.gserviceaccount.com --project=anima-test-1 --role=roles/iam.workloadIdentityUser --member=serviceAccount:anima-test-1.svc.id.goog[anima/anima-self-coding]" \
  "sql users set-password anima"; do
  grep -qF -- "$expected" "$FAKE_LOG" || fail "--cloud-sql-proxy did not: $expected"
done
[[ "$(state_url postgres-url)" =~ ^postgresql://anima:[0-9a-f]{48}@127\.0\.0\.1:5432/anima\?sslmode=disable$ ]] ||
  fail "with the proxy, postgres-url does not point at the sidecar"
if [[ -n "$REAL_KUBECTL" ]]; then
  python3 - "$FAKE_RENDER" <<'PY' || fail "the applied proxy overlay is not set up for this instance"
import sys, yaml
objs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
assert objs[("ConfigMap", "anima-cloud-sql")]["data"]["instance"] == "anima-test-1:europe-west1:anima"
for account in ("anima-cloud-sql", "anima-self-coding"):
    sa = objs[("ServiceAccount", account)]["metadata"]["annotations"]
    assert sa["iam.gke.io/gcp-service-account"] == "anima-cloud-sql@anima-test-1.iam.gserviceaccount.com", (account, sa)
assert ("NetworkPolicy", "anima-postgres-egress") not in objs
assert objs[("NetworkPolicy", "anima-cloud-sql-proxy-egress")]["spec"]["egress"][0]["to"] == \
    [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
# The gateway acts through anima-cloud-sql; self-coding keeps its own account (its claims' Role).
for name, account in (("anima-self-coding", "anima-self-coding"), ("anima-gateway", "anima-cloud-sql")):
    spec = objs[("Deployment", name)]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account, (name, spec["serviceAccountName"])
    assert [c["name"] for c in spec["initContainers"]] == ["cloud-sql-proxy"], name
PY
fi
echo "ok: --cloud-sql-proxy sets up Workload Identity and the proxy sidecars, postgres-url through them"

# 4. Bad arguments exit 2 with a message, before doing anything.
: >"$FAKE_LOG"
for args in "" "--project=X" "--project=anima-test-1 --tag=latest" "--project=anima-test-1 --bogus" \
  "--project=anima-test-1 --region=mars" "--project=anima-test-1 --domain=a;b" \
  "--project=anima-test-1 --network=Bad_Net" "--project=anima-test-1 --redis-size-gb=0" \
  "--project=anima-test-1 --sql-instance=-x" "--project=anima-test-1 --sql-tier=db;rm" \
  "--project=anima-test-1 --gvisor-machine-type=E2;x"; do
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
