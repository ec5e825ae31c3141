#!/usr/bin/env bash
# Renders k8s/base and every overlay (gke, gke-cloud-sql-proxy) with `kubectl kustomize`,
# validates every object against the Kubernetes schemas (kubernetes-models 4.5.1,
# @kubernetes-models/gke 4.6.2; GMP's CRDs with schemas of our own; Agent Sandbox's
# SandboxTemplate, SandboxWarmPool and SandboxClaim with the schemas of their CRDs, vendored in
# tests/ops/k8s/crds/) on Node, and checks the project's policy (tests/ops/k8s/policy.py).
#
# The npm packages are installed once, at the versions of tests/ops/k8s/package-lock.json, into
# ANIMA_OPS_CACHE (default <source>/.anima/ops-cache, gitignored); later runs are offline.
# Exits 77 (ctest: skipped) only when kubectl is missing or npm cannot reach its registry.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
CACHE="${ANIMA_OPS_CACHE:-$ANIMA_SOURCE_DIR/.anima/ops-cache}/k8s-validate"
SKIP=77

if ! command -v kubectl >/dev/null; then
  echo "SKIP: kubectl is not installed (it is not a Debian bookworm package: install it from" \
    "Google Cloud SDK or Kubernetes' apt repository to run this test)"
  exit "$SKIP"
fi
for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing" >&2; exit 1; }
done

# shellcheck source=npm_pinned.sh
source "$HERE/npm_pinned.sh"
npm_pinned_install "$HERE/k8s" "$CACHE" kubernetes-models
export ANIMA_NODE_MODULES="$CACHE/node_modules"

WORK="$(mktemp -d /tmp/anima-ops-k8s.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# The CRDs, as JSON for validate.mjs.
to_json='import sys, yaml, json; json.dump([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d], sys.stdout)'
python3 -c "$to_json" "$HERE"/k8s/crds/*/*.yaml >"$WORK/crds.json"
export ANIMA_CRDS="$WORK/crds.json"

status=0
targets=(base)
for dir in "$ANIMA_SOURCE_DIR"/k8s/overlays/*/; do
  targets+=("overlays/$(basename "$dir")")
done
for target in "${targets[@]}"; do
  echo "== k8s/$target"
  json="$WORK/$(basename "$target").json"
  kubectl kustomize "$ANIMA_SOURCE_DIR/k8s/$target" >"$WORK/rendered.yaml"
  python3 -c "$to_json" "$WORK/rendered.yaml" >"$json"
  node "$HERE/k8s/validate.mjs" <"$json" | grep -v '^ok ' || status=1
  overlay=()
  [[ "$target" == overlays/gke* ]] && overlay=(--overlay gke)
  python3 "$HERE/k8s/policy.py" "${overlay[@]}" <"$json" || status=1
done
[[ " ${targets[*]} " == *" overlays/gke-cloud-sql-proxy "* ]] || { echo "FAIL: no overlays/gke-cloud-sql-proxy"; status=1; }
# The Cloud SQL Auth Proxy overlay differs from gke by exactly its component: the sidecars, their
# account and policy, and anima-postgres-egress gone.
python3 - "$WORK/gke.json" "$WORK/gke-cloud-sql-proxy.json" <<'PY' || status=1
import json, sys
gke, proxy = ({(o["kind"], o["metadata"]["name"]): o for o in json.load(open(f))} for f in sys.argv[1:])
bad = []
if set(proxy) - set(gke) != {("ServiceAccount", "anima-cloud-sql"), ("ConfigMap", "anima-cloud-sql"),
                             ("NetworkPolicy", "anima-cloud-sql-proxy-egress")}:
    bad.append(f"added {sorted(set(proxy) - set(gke))}")
if set(gke) - set(proxy) != {("NetworkPolicy", "anima-postgres-egress")}:
    bad.append(f"removed {sorted(set(gke) - set(proxy))}")
for name in ("anima-gateway", "anima-self-coding", "anima-router"):
    spec = proxy[("Deployment", name)]["spec"]["template"]["spec"]
    sidecars = [c["name"] for c in spec.get("initContainers", [])]
    want = [] if name == "anima-router" else ["cloud-sql-proxy"]
    if sidecars != want:
        bad.append(f"{name}: init containers {sidecars}, expected {want}")
for b in bad:
    print("FAIL gke-cloud-sql-proxy:", b)
if not bad:
    print("ok: gke-cloud-sql-proxy is gke plus the proxy sidecars of the PostgreSQL users")
sys.exit(1 if bad else 0)
PY
# The checks themselves: a broken Deployment must fail validation, and every policy rule must
# catch the manifests broken for it.
echo '[{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"two"}}]' |
  node "$HERE/k8s/validate.mjs" >/dev/null && { echo "FAIL: schema validation accepts a broken Deployment"; status=1; }
# Agent Sandbox's objects broken in ways the API server refuses (a misspelt field, a wrong type,
# a value out of range or of no enum, a deprecated version) must each fail their CRD's schema.
python3 - "$WORK/base.json" >"$WORK/broken.json" <<'PY'
import copy, json, sys
objs = json.load(open(sys.argv[1]))
first = {o["kind"]: o for o in reversed(objs)}
def broken(kind, name, f):
    o = copy.deepcopy(first[kind])
    o["metadata"]["name"] = name
    f(o)
    return o
def pod(t):
    return t["spec"]["podTemplate"]["spec"]
json.dump([
    broken("SandboxTemplate", "misspelt-pod-field",
           lambda t: pod(t).update(runtimeClasName=pod(t).pop("runtimeClassName"))),
    broken("SandboxTemplate", "misspelt-template-field", lambda t: t["spec"].update(networkPolicy={"egres": []})),
    broken("SandboxTemplate", "args-not-a-list", lambda t: pod(t)["containers"][0].update(args="--listen=:7070")),
    broken("SandboxTemplate", "unknown-management", lambda t: t["spec"].update(networkPolicyManagement="Managd")),
    broken("SandboxTemplate", "misspelt-metadata", lambda t: t["metadata"].update(lables={})),
    broken("SandboxWarmPool", "negative-replicas", lambda p: p["spec"].update(replicas=-1)),
    broken("SandboxWarmPool", "replicas-a-string", lambda p: p["spec"].update(replicas="2")),
    broken("SandboxWarmPool", "deprecated-version", lambda p: p.update(apiVersion="extensions.agents.x-k8s.io/v1alpha1")),
], sys.stdout)
PY
out="$(node "$HERE/k8s/validate.mjs" <"$WORK/broken.json" || true)"
if [[ "$(grep -c '^FAIL' <<<"$out")" == 8 ]]; then
  echo "ok: Agent Sandbox's CRD schemas refuse each of 8 broken objects"
else
  echo "FAIL: the CRD schemas accept a broken object:"
  grep '^ok' <<<"$out"
  status=1
fi
python3 "$HERE/k8s/policy.py" --self-test <"$WORK/gke.json" || status=1
# The GMP rules are rules.yml, unchanged.
python3 "$ANIMA_SOURCE_DIR/deploy/prometheus/gmp_rules.py" --check || status=1
exit "$status"
