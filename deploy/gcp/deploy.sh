#!/usr/bin/env bash
# Deploys Anima to Google Cloud: an Artifact Registry repository, a GKE Autopilot cluster, the
# images built by Cloud Build, the provider keys as a Secret, and k8s/overlays/gke applied.
# Every step reuses what exists, so running it again updates a deployment in place.
#
#   deploy/gcp/deploy.sh --project=ID [--region=europe-west1] [--cluster=anima]
#                        [--repository=anima] [--tag=<git commit>] [--domain=anima.example.com]
#                        [--dry-run]
#
# Keys: OPENAI_API_KEY, VENICE_API_KEY, GEMINI_API_KEY from the environment; those set replace
# the stored ones, and with none set the Secret is left as it is. Keys are never printed.
# Clients: the gateway runs with auth on. The first run creates its keys file (the Secret
# anima-gateway-auth) with one admin key, kept in the Secret anima-admin-key and never printed;
# later runs leave both alone (edit the keys file with tools/anima keys, docs/security.md).
# --dry-run prints every command it would run and runs none (nothing is created or read).
# Needs gcloud (authenticated) and kubectl; run from anywhere.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROJECT=""
REGION="europe-west1"
CLUSTER="anima"
REPOSITORY="anima"
TAG=""
DOMAIN=""
DRY_RUN=0
NAMESPACE="anima"
SERVICES=(gateway router llm-broker self-coding word-count)
KEYS=(OPENAI_API_KEY VENICE_API_KEY GEMINI_API_KEY)
# The placeholder registry of k8s/overlays/gke/kustomization.yaml, replaced here.
OVERLAY_REGISTRY="europe-west1-docker.pkg.dev/anima-project/anima"

usage() {
  sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

log() { printf '\033[1mdeploy:\033[0m %s\n' "$*" >&2; }
die() {
  printf 'deploy: %s\n' "$*" >&2
  exit 2
}

for arg in "$@"; do
  case "$arg" in
    --project=*) PROJECT="${arg#*=}" ;;
    --region=*) REGION="${arg#*=}" ;;
    --cluster=*) CLUSTER="${arg#*=}" ;;
    --repository=*) REPOSITORY="${arg#*=}" ;;
    --tag=*) TAG="${arg#*=}" ;;
    --domain=*) DOMAIN="${arg#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done
[[ -n "$PROJECT" ]] || die "--project is required (see --help)"
[[ "$PROJECT" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "--project: '$PROJECT' is not a project id"
[[ "$REGION" =~ ^[a-z]+-[a-z]+[0-9]$ ]] || die "--region: '$REGION' is not a region"
[[ "$CLUSTER" =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]] || die "--cluster: '$CLUSTER' is not a cluster name"
[[ "$REPOSITORY" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--repository: '$REPOSITORY' is not a repository name"
if [[ -z "$TAG" ]]; then
  TAG="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || true)"
  [[ -n "$TAG" ]] || die "--tag is required outside a git checkout"
fi
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ && "$TAG" != latest ]] || die "--tag: '$TAG' is not a pinned image tag"
[[ -z "$DOMAIN" || "$DOMAIN" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ ]] || die "--domain: '$DOMAIN' is not a domain name"
REGISTRY="$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY"

# run CMD...: runs a command, or with --dry-run prints it (shell-quoted) and runs nothing.
run() {
  if ((DRY_RUN)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# exists CMD...: whether a describe command succeeds. With --dry-run it prints the command and
# answers "no", so every command the script could run is printed.
exists() {
  if ((DRY_RUN)); then
    run "$@"
    return 1
  fi
  "$@" >/dev/null 2>&1
}

log "project $PROJECT, region $REGION, cluster $CLUSTER, images $REGISTRY/*:$TAG"

log "enabling the APIs"
run gcloud services enable artifactregistry.googleapis.com container.googleapis.com \
  cloudbuild.googleapis.com --project="$PROJECT"

if exists gcloud artifacts repositories describe "$REPOSITORY" --location="$REGION" --project="$PROJECT"; then
  log "Artifact Registry repository $REPOSITORY exists"
else
  log "creating the Artifact Registry repository $REPOSITORY"
  run gcloud artifacts repositories create "$REPOSITORY" --repository-format=docker \
    --location="$REGION" --project="$PROJECT" --description="Anima images"
fi

if exists gcloud container clusters describe "$CLUSTER" --region="$REGION" --project="$PROJECT"; then
  log "GKE Autopilot cluster $CLUSTER exists"
else
  log "creating the GKE Autopilot cluster $CLUSTER (takes several minutes)"
  run gcloud container clusters create-auto "$CLUSTER" --region="$REGION" --project="$PROJECT"
fi
run gcloud container clusters get-credentials "$CLUSTER" --region="$REGION" --project="$PROJECT"

# Images are immutable per tag: build only when this tag is not pushed yet.
if exists gcloud artifacts docker images describe "$REGISTRY/anima-gateway:$TAG" --project="$PROJECT"; then
  log "images $TAG exist"
else
  log "building the images with Cloud Build"
  run gcloud builds submit "$ROOT" --project="$PROJECT" --region="$REGION" \
    --config="$ROOT/deploy/gcp/cloudbuild.yaml" \
    --substitutions="_REGISTRY=$REGISTRY,_TAG=$TAG"
fi

# The overlay with this deployment's images and domain, in a kustomization of its own so the
# repository is never edited.
WORK=""
cleanup() { [[ -z "$WORK" ]] || rm -rf "$WORK"; }
trap cleanup EXIT
kustomization() {
  local overlay="$1"
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
  printf 'resources:\n  - %s\n' "$overlay"
  printf 'images:\n'
  local s
  for s in "${SERVICES[@]}"; do
    printf '  - {name: %s, newName: %s, newTag: "%s"}\n' \
      "$OVERLAY_REGISTRY/anima-$s" "$REGISTRY/anima-$s" "$TAG"
  done
  if [[ -n "$DOMAIN" ]]; then
    printf 'patches:\n  - target: {kind: ManagedCertificate, name: anima}\n'
    printf '    patch: |-\n      - {op: replace, path: /spec/domains, value: ["%s"]}\n' "$DOMAIN"
  fi
}
if ((DRY_RUN)); then
  WORK_SHOWN="<temporary directory>"
  log "the kustomization $WORK_SHOWN/kustomization.yaml would be:"
  kustomization "$ROOT/k8s/overlays/gke"
else
  WORK="$(mktemp -d)"
  WORK_SHOWN="$WORK"
  # kustomize resolves resources relative to the kustomization; link the repository's k8s/.
  ln -s "$ROOT/k8s" "$WORK/k8s"
  kustomization "k8s/overlays/gke" >"$WORK/kustomization.yaml"
fi
[[ -n "$DOMAIN" ]] || log "no --domain: the managed certificate keeps its placeholder and will not provision"

log "applying k8s/overlays/gke"
run kubectl apply --server-side --field-manager=anima-deploy --force-conflicts \
  --kustomize="$WORK_SHOWN"

# Keys: server-side apply under a field manager of their own, so applying the manifests (which
# carry no keys) never erases them.
present=()
for k in "${KEYS[@]}"; do
  [[ -z "${!k:-}" ]] || present+=("$k")
done
if ((${#present[@]})); then
  log "storing ${present[*]} in the Secret anima-provider-keys"
  if ((DRY_RUN)); then
    run kubectl create secret generic anima-provider-keys --namespace="$NAMESPACE" \
      --from-env-file="<temporary file with ${present[*]}>" --dry-run=client -o yaml
    run kubectl apply --server-side --field-manager=anima-keys --force-conflicts -f -
  else
    umask 077
    for k in "${present[@]}"; do printf '%s=%s\n' "$k" "${!k}"; done >"$WORK/keys.env"
    kubectl create secret generic anima-provider-keys --namespace="$NAMESPACE" \
      --from-env-file="$WORK/keys.env" --dry-run=client -o yaml |
      kubectl apply --server-side --field-manager=anima-keys --force-conflicts -f -
    # The broker reads keys at start: restart it to pick up new ones.
    kubectl rollout restart deployment/anima-llm-broker --namespace="$NAMESPACE"
  fi
else
  log "no provider key in the environment: the Secret is left as it is"
fi

# The gateway's keys file: created once, with a first admin key, then left to the operator.
has_auth_keys() {
  if ((DRY_RUN)); then
    run kubectl get secret anima-gateway-auth --namespace="$NAMESPACE" -o 'jsonpath={.data.keys\.json}'
    return 1
  fi
  [[ -n "$(kubectl get secret anima-gateway-auth --namespace="$NAMESPACE" \
    -o 'jsonpath={.data.keys\.json}' 2>/dev/null)" ]]
}
if has_auth_keys; then
  log "the gateway's keys file exists (Secret anima-gateway-auth): left as it is"
else
  log "creating the gateway's keys file with a first admin key (Secret anima-gateway-auth)"
  if ((DRY_RUN)); then
    run kubectl create secret generic anima-gateway-auth --namespace="$NAMESPACE" \
      --from-file=keys.json="<temporary keys file: principal admin, the key's SHA-256>" \
      --dry-run=client -o yaml
    run kubectl apply --server-side --field-manager=anima-auth -f -
    run kubectl create secret generic anima-admin-key --namespace="$NAMESPACE" \
      --from-file=key="<temporary file with the new admin key>" --dry-run=client -o yaml
    run kubectl apply --server-side --field-manager=anima-auth -f -
  else
    umask 077
    admin_key="anima-$(openssl rand -hex 24)"
    printf '%s' "$admin_key" >"$WORK/admin.key"
    admin_hash="$(sha256sum "$WORK/admin.key" | cut -d' ' -f1)"
    cat >"$WORK/keys.json" <<JSON
{
  "default_tier": "default",
  "tiers": {
    "default": {"requests_per_second": 20, "requests_per_minute": 600, "requests_in_flight": 32,
                "tokens_per_minute": 200000, "tokens_per_day": 5000000, "cost_per_day": 20,
                "cost_per_month": 200, "jobs_in_flight": 2, "jobs_per_day": 100}
  },
  "principals": {"admin": {"role": "admin"}},
  "keys": [{"principal": "admin", "sha256": "$admin_hash", "name": "first admin key (deploy.sh)"}]
}
JSON
    kubectl create secret generic anima-gateway-auth --namespace="$NAMESPACE" \
      --from-file=keys.json="$WORK/keys.json" --dry-run=client -o yaml |
      kubectl apply --server-side --field-manager=anima-auth -f -
    kubectl create secret generic anima-admin-key --namespace="$NAMESPACE" \
      --from-file=key="$WORK/admin.key" --dry-run=client -o yaml |
      kubectl apply --server-side --field-manager=anima-auth -f -
    unset admin_key
  fi
  log "the first admin key: kubectl get secret anima-admin-key --namespace=$NAMESPACE -o jsonpath='{.data.key}' | base64 -d"
fi

log "waiting for the rollout"
for s in gateway router llm-broker word-count; do
  run kubectl rollout status "deployment/anima-$s" --namespace="$NAMESPACE" --timeout=10m
done
run kubectl rollout status statefulset/anima-self-coding --namespace="$NAMESPACE" --timeout=10m
run kubectl get ingress anima --namespace="$NAMESPACE" \
  -o 'jsonpath={.status.loadBalancer.ingress[0].ip}{"\n"}'
log "done: point ${DOMAIN:-your domain} at the address above; the certificate provisions once DNS resolves"
