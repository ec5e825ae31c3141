#!/usr/bin/env bash
# Renders k8s/base and k8s/overlays/gke with `kubectl kustomize`, validates every object against
# the Kubernetes schemas (kubernetes-models 4.5.1, @kubernetes-models/gke 4.6.2; GMP's CRDs with
# schemas of our own) on Node, and checks the project's policy (tests/ops/k8s/policy.py).
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

status=0
for target in base overlays/gke; do
  echo "== k8s/$target"
  kubectl kustomize "$ANIMA_SOURCE_DIR/k8s/$target" >"$WORK/rendered.yaml"
  python3 -c 'import sys, yaml, json; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)' \
    <"$WORK/rendered.yaml" >"$WORK/rendered.json"
  node "$HERE/k8s/validate.mjs" <"$WORK/rendered.json" | grep -v '^ok ' || status=1
  overlay=()
  [[ "$target" == overlays/gke ]] && overlay=(--overlay gke)
  python3 "$HERE/k8s/policy.py" "${overlay[@]}" <"$WORK/rendered.json" || status=1
done
# The checks themselves: a broken Deployment must fail validation, and every policy rule must
# catch the manifests broken for it.
echo '[{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"two"}}]' |
  node "$HERE/k8s/validate.mjs" >/dev/null && { echo "FAIL: schema validation accepts a broken Deployment"; status=1; }
python3 "$HERE/k8s/policy.py" --self-test <"$WORK/rendered.json" || status=1
# The GMP rules are rules.yml, unchanged.
python3 "$ANIMA_SOURCE_DIR/deploy/prometheus/gmp_rules.py" --check || status=1
exit "$status"
