#!/usr/bin/env bash
# Deploys Anima to Google Cloud: an Artifact Registry repository, a GKE Autopilot cluster, the
# images built by Cloud Build, Memorystore for Redis and Cloud SQL for PostgreSQL on private IPs,
# the provider keys and the state URLs as Secrets, and k8s/overlays/gke applied.
# Every step reuses what exists, so running it again updates a deployment in place.
#
#   deploy/gcp/deploy.sh --project=ID [--region=europe-west1] [--cluster=anima]
#                        [--repository=anima] [--tag=<git commit>] [--domain=anima.example.com]
#                        [--network=default] [--redis-instance=anima] [--redis-size-gb=1]
#                        [--sql-instance=anima] [--sql-tier=db-custom-1-3840]
#                        [--gvisor-machine-type=e2-standard-4] [--cloud-sql-proxy] [--dry-run]
#
# Self-coding's sandboxes: generated code runs in gVisor pods claimed from Agent Sandbox
# (kubernetes-sigs/agent-sandbox, pinned at AGENT_SANDBOX_VERSION). Autopilot runs gVisor pods as
# they are; on a Standard cluster of yours the script adds a node pool with GKE Sandbox (gVisor)
# of --gvisor-machine-type. It installs Agent Sandbox's controller and CRDs from that release
# (server-side apply) and waits for them before applying the manifests.
#
# Keys: OPENAI_API_KEY, VENICE_API_KEY, GEMINI_API_KEY from the environment; those set replace
# the stored ones, and with none set the Secret is left as it is. Keys are never printed.
# Clients: the gateway runs with auth on. The first run creates its keys file (the Secret
# anima-gateway-auth) with one admin key, kept in the Secret anima-admin-key and never printed;
# later runs leave both alone (edit the keys file with tools/anima keys, docs/security.md).
# Shared state: the cluster's VPC (--network) gets a private services access range; Memorystore
# (Redis 7, standard tier, AUTH on) and Cloud SQL (PostgreSQL 15, regional, private IP only,
# backups with point-in-time recovery) take their addresses from it. The database user's password
# is generated here and, with Redis's AUTH string, kept only in the Secret anima-state (the
# URLs), never printed; later runs leave that Secret alone. --cloud-sql-proxy reaches Cloud SQL
# through the Cloud SQL Auth Proxy sidecar with Workload Identity (k8s/overlays/gke-cloud-sql-proxy)
# instead of its private IP directly.
# --dry-run prints every command it would run and runs none (nothing is created or read).
# Needs gcloud (authenticated), kubectl and openssl; run from anywhere.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROJECT=""
REGION="europe-west1"
CLUSTER="anima"
REPOSITORY="anima"
TAG=""
DOMAIN=""
NETWORK="default"
REDIS_INSTANCE="anima"
REDIS_SIZE_GB=1
SQL_INSTANCE="anima"
SQL_TIER="db-custom-1-3840"
GVISOR_MACHINE_TYPE="e2-standard-4"
CLOUD_SQL_PROXY=0
DRY_RUN=0
NAMESPACE="anima"
# The images of k8s/overlays/gke: anima-<name>.
IMAGES=(gateway router llm-broker self-coding sandbox-runner word-count)
KEYS=(OPENAI_API_KEY VENICE_API_KEY GEMINI_API_KEY)
# The placeholder registry of k8s/overlays/gke/kustomization.yaml, replaced here.
OVERLAY_REGISTRY="europe-west1-docker.pkg.dev/anima-project/anima"
# The private services access range (Memorystore and Cloud SQL), the database and its user.
PSA_RANGE="anima-private-services"
DB_NAME="anima"
DB_USER="anima"
# Agent Sandbox: the release whose controller and CRDs are installed, the same as the CRDs
# tests/ops/k8s/crds/ validates the manifests with. Its all-in-one manifest declares the controller
# once with the extensions (SandboxClaim, SandboxTemplate, SandboxWarmPool) on.
AGENT_SANDBOX_VERSION="v0.5.6"
AGENT_SANDBOX_MANIFEST="https://github.com/kubernetes-sigs/agent-sandbox/releases/download/$AGENT_SANDBOX_VERSION/sandbox-with-extensions.yaml"
AGENT_SANDBOX_CRDS=(sandboxes.agents.x-k8s.io sandboxclaims.extensions.agents.x-k8s.io
  sandboxtemplates.extensions.agents.x-k8s.io sandboxwarmpools.extensions.agents.x-k8s.io)
# The node pool of gVisor nodes on a Standard cluster.
GVISOR_POOL="anima-gvisor"

usage() {
  sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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
    --network=*) NETWORK="${arg#*=}" ;;
    --redis-instance=*) REDIS_INSTANCE="${arg#*=}" ;;
    --redis-size-gb=*) REDIS_SIZE_GB="${arg#*=}" ;;
    --sql-instance=*) SQL_INSTANCE="${arg#*=}" ;;
    --sql-tier=*) SQL_TIER="${arg#*=}" ;;
    --gvisor-machine-type=*) GVISOR_MACHINE_TYPE="${arg#*=}" ;;
    --cloud-sql-proxy) CLOUD_SQL_PROXY=1 ;;
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
[[ "$NETWORK" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--network: '$NETWORK' is not a VPC network name"
[[ "$REDIS_INSTANCE" =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]] || die "--redis-instance: '$REDIS_INSTANCE' is not a Memorystore instance id"
[[ "$REDIS_SIZE_GB" =~ ^[1-9][0-9]{0,2}$ ]] || die "--redis-size-gb: '$REDIS_SIZE_GB' is not a size in GB (1 to 300)"
[[ "$SQL_INSTANCE" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--sql-instance: '$SQL_INSTANCE' is not a Cloud SQL instance name"
[[ "$SQL_TIER" =~ ^db-[a-z0-9-]+$ ]] || die "--sql-tier: '$SQL_TIER' is not a Cloud SQL machine tier"
[[ "$GVISOR_MACHINE_TYPE" =~ ^[a-z][a-z0-9]*-[a-z0-9-]+$ ]] || die "--gvisor-machine-type: '$GVISOR_MACHINE_TYPE' is not a machine type"
REGISTRY="$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY"
NETWORK_PATH="projects/$PROJECT/global/networks/$NETWORK"
# Workload Identity for the Cloud SQL Auth Proxy: the Kubernetes service account of
# k8s/components/cloud-sql-proxy acts as this Google service account.
PROXY_GSA="anima-cloud-sql@$PROJECT.iam.gserviceaccount.com"
OVERLAY="k8s/overlays/gke"
((CLOUD_SQL_PROXY == 0)) || OVERLAY="k8s/overlays/gke-cloud-sql-proxy"

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

# query PLACEHOLDER CMD...: the output of a command that reads something. With --dry-run it
# prints the command (on stderr, as the caller captures stdout) and answers PLACEHOLDER.
query() {
  local placeholder="$1"
  shift
  if ((DRY_RUN)); then
    run "$@" >&2
    printf '%s' "$placeholder"
  else
    "$@"
  fi
}

log "project $PROJECT, region $REGION, cluster $CLUSTER, images $REGISTRY/*:$TAG"

log "enabling the APIs"
run gcloud services enable artifactregistry.googleapis.com container.googleapis.com \
  cloudbuild.googleapis.com compute.googleapis.com servicenetworking.googleapis.com \
  redis.googleapis.com sqladmin.googleapis.com iamcredentials.googleapis.com --project="$PROJECT"

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
  run gcloud container clusters create-auto "$CLUSTER" --region="$REGION" --project="$PROJECT" \
    --network="$NETWORK"
fi
run gcloud container clusters get-credentials "$CLUSTER" --region="$REGION" --project="$PROJECT"

# Self-coding's sandboxes: gVisor nodes, then Agent Sandbox. Autopilot schedules pods with
# runtimeClassName gvisor on gVisor nodes of its own; a Standard cluster needs a node pool with GKE
# Sandbox, which taints its nodes so that only gVisor pods land there (at least one other pool
# must remain, for the rest).
autopilot="$(query "<True on Autopilot>" gcloud container clusters describe "$CLUSTER" --region="$REGION" \
  --project="$PROJECT" --format='value(autopilot.enabled)')"
if [[ "$autopilot" == True ]]; then
  log "Autopilot runs gVisor pods (runtimeClassName gvisor) without a node pool of ours"
else
  ((!DRY_RUN)) || log "on a Standard cluster (not one this script creates, which is Autopilot):"
  if exists gcloud container node-pools describe "$GVISOR_POOL" --cluster="$CLUSTER" --region="$REGION" \
    --project="$PROJECT"; then
    log "gVisor node pool $GVISOR_POOL exists"
  else
    log "creating the gVisor node pool $GVISOR_POOL (GKE Sandbox)"
    run gcloud container node-pools create "$GVISOR_POOL" --cluster="$CLUSTER" --region="$REGION" \
      --project="$PROJECT" --sandbox=type=gvisor --image-type=cos_containerd \
      --machine-type="$GVISOR_MACHINE_TYPE" --num-nodes=1 --enable-autoscaling --min-nodes=0 --max-nodes=3
  fi
fi
# The controller and the CRDs of the pinned release: server-side apply (the SandboxTemplate CRD,
# with a whole PodSpec in its schema, is too large for client-side apply's annotation), the same
# every run, so a re-run repairs drift and a new AGENT_SANDBOX_VERSION upgrades. The manifests
# are applied only once the CRDs serve (Established) and the controller runs, which also serves
# the CRDs' conversion webhook and fills the warm pool.
log "installing Agent Sandbox $AGENT_SANDBOX_VERSION (controller and CRDs)"
run kubectl apply --server-side --field-manager=anima-agent-sandbox --force-conflicts \
  -f "$AGENT_SANDBOX_MANIFEST"
run kubectl wait --for=condition=Established --timeout=2m "${AGENT_SANDBOX_CRDS[@]/#/crd/}"
run kubectl rollout status deployment/agent-sandbox-controller --namespace=agent-sandbox-system --timeout=5m

# Images are immutable per tag: build only when this tag is not pushed yet.
if exists gcloud artifacts docker images describe "$REGISTRY/anima-gateway:$TAG" --project="$PROJECT"; then
  log "images $TAG exist"
else
  log "building the images with Cloud Build"
  run gcloud builds submit "$ROOT" --project="$PROJECT" --region="$REGION" \
    --config="$ROOT/deploy/gcp/cloudbuild.yaml" \
    --substitutions="_REGISTRY=$REGISTRY,_TAG=$TAG"
fi

# Shared state. Memorystore and Cloud SQL take private IPs from one range allocated in the VPC and
# peered with Google's service producer network (private services access); the pods reach them
# there, and the NetworkPolicies are narrowed to that range below.
if exists gcloud compute addresses describe "$PSA_RANGE" --global --project="$PROJECT"; then
  log "private services access range $PSA_RANGE exists"
else
  log "allocating the private services access range $PSA_RANGE in the network $NETWORK"
  run gcloud compute addresses create "$PSA_RANGE" --global --purpose=VPC_PEERING \
    --prefix-length=16 --network="$NETWORK" --project="$PROJECT" \
    --description="Anima: Memorystore and Cloud SQL private IPs"
fi
peered="$(query "" gcloud services vpc-peerings list --service=servicenetworking.googleapis.com \
  --network="$NETWORK" --project="$PROJECT" --format='value(reservedPeeringRanges.join(","))')"
if [[ ",$peered," == *",$PSA_RANGE,"* ]]; then
  log "the network $NETWORK is peered with $PSA_RANGE"
elif [[ -z "$peered" ]]; then
  log "peering the network $NETWORK with Google's services (private services access)"
  run gcloud services vpc-peerings connect --service=servicenetworking.googleapis.com \
    --ranges="$PSA_RANGE" --network="$NETWORK" --project="$PROJECT"
else
  # The ranges already peered stay (other services use them); ours is added.
  log "adding $PSA_RANGE to the peering of the network $NETWORK"
  run gcloud services vpc-peerings update --service=servicenetworking.googleapis.com \
    --ranges="$peered,$PSA_RANGE" --network="$NETWORK" --project="$PROJECT"
fi
psa_cidr="$(query "<the CIDR of $PSA_RANGE>" gcloud compute addresses describe "$PSA_RANGE" --global \
  --project="$PROJECT" --format='value(address,prefixLength)')"
if ((!DRY_RUN)); then
  read -r psa_address psa_prefix <<<"$psa_cidr"
  psa_cidr="$psa_address/$psa_prefix"
  [[ "$psa_cidr" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "$PSA_RANGE: unexpected address '$psa_cidr'"
fi

# The Kubernetes API server as self-coding's pods reach it: the kubernetes Service forwards to the
# control plane's endpoint, which is what NetworkPolicies see (k8s/base/network-policies.yaml,
# anima-kube-api-egress, is narrowed to it below).
api_endpoint="$(query "<address> <port>" kubectl get endpointslices --namespace=default \
  --selector=kubernetes.io/service-name=kubernetes \
  -o 'jsonpath={.items[*].endpoints[*].addresses[*]} {.items[0].ports[0].port}')"
if ((DRY_RUN)); then
  api_peers='{ipBlock: {cidr: "<the API server'"'"'s address>/32"}}'
  api_port="<its port>"
else
  read -r -a fields <<<"$api_endpoint"
  ((${#fields[@]} >= 2)) || die "the kubernetes Service has no endpoint: '$api_endpoint'"
  api_port="${fields[-1]}"
  [[ "$api_port" =~ ^[0-9]+$ ]] || die "the kubernetes Service's endpoint: unexpected port '$api_port'"
  api_peers=""
  for address in "${fields[@]:0:${#fields[@]}-1}"; do
    if [[ "$address" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
      api_peers+="${api_peers:+, }{ipBlock: {cidr: \"$address/32\"}}"
    elif [[ "$address" =~ ^[0-9a-fA-F:]+$ ]]; then
      api_peers+="${api_peers:+, }{ipBlock: {cidr: \"$address/128\"}}"
    else
      die "the kubernetes Service's endpoint: unexpected address '$address'"
    fi
  done
fi

# Redis: the router's conversation memory and the gateways' quotas. Standard tier (a replica,
# automatic failover). AUTH on; no in-transit encryption, as the services' hiredis (Debian's
# 0.14) has no TLS: traffic stays inside the VPC. volatile-lru: under memory pressure Redis drops
# the least recently used keys that have a TTL (conversations, quota windows), as sized in
# docs/operations.md.
if exists gcloud redis instances describe "$REDIS_INSTANCE" --region="$REGION" --project="$PROJECT"; then
  log "Memorystore instance $REDIS_INSTANCE exists"
else
  log "creating the Memorystore for Redis instance $REDIS_INSTANCE (takes several minutes)"
  run gcloud redis instances create "$REDIS_INSTANCE" --region="$REGION" --project="$PROJECT" \
    --tier=standard --size="$REDIS_SIZE_GB" --redis-version=redis_7_0 \
    --network="$NETWORK_PATH" --connect-mode=private-service-access \
    --reserved-ip-range="$PSA_RANGE" --enable-auth --transit-encryption-mode=disabled \
    --redis-config=maxmemory-policy=volatile-lru
fi

# PostgreSQL: self-coding's jobs and events, the gateways' usage ledger. Regional (a standby in
# another zone), private IP only, TLS required, room for every replica's pool (docs/operations.md,
# "Sizing PostgreSQL"), daily backups kept 14 days and the write-ahead log kept 7 days for
# point-in-time recovery ("Backing up and restoring PostgreSQL").
if exists gcloud sql instances describe "$SQL_INSTANCE" --project="$PROJECT"; then
  log "Cloud SQL instance $SQL_INSTANCE exists"
else
  log "creating the Cloud SQL for PostgreSQL instance $SQL_INSTANCE (takes several minutes)"
  run gcloud sql instances create "$SQL_INSTANCE" --project="$PROJECT" --region="$REGION" \
    --database-version=POSTGRES_15 --edition=enterprise --tier="$SQL_TIER" \
    --availability-type=regional --storage-auto-increase \
    --network="$NETWORK_PATH" --allocated-ip-range-name="$PSA_RANGE" --no-assign-ip \
    --ssl-mode=ENCRYPTED_ONLY --database-flags=max_connections=200 \
    --backup-start-time=02:00 --retained-backups-count=14 \
    --enable-point-in-time-recovery --retained-transaction-log-days=7
fi
if exists gcloud sql databases describe "$DB_NAME" --instance="$SQL_INSTANCE" --project="$PROJECT"; then
  log "database $DB_NAME exists"
else
  log "creating the database $DB_NAME"
  run gcloud sql databases create "$DB_NAME" --instance="$SQL_INSTANCE" --project="$PROJECT"
fi

if ((CLOUD_SQL_PROXY)); then
  # The proxy sidecars act as $PROXY_GSA (Workload Identity), which may connect to Cloud SQL.
  if exists gcloud iam service-accounts describe "$PROXY_GSA" --project="$PROJECT"; then
    log "service account $PROXY_GSA exists"
  else
    log "creating the service account $PROXY_GSA for the Cloud SQL Auth Proxy"
    run gcloud iam service-accounts create "${PROXY_GSA%%@*}" --project="$PROJECT" \
      --display-name="Anima Cloud SQL Auth Proxy"
  fi
  # The gateway's account, and self-coding's own (which holds its SandboxClaims' Role).
  log "granting $PROXY_GSA roles/cloudsql.client, and anima/anima-cloud-sql and anima/anima-self-coding the right to act as it"
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$PROXY_GSA" \
    --role=roles/cloudsql.client --condition=None --format=none
  for account in anima-cloud-sql anima-self-coding; do
    run gcloud iam service-accounts add-iam-policy-binding "$PROXY_GSA" --project="$PROJECT" \
      --role=roles/iam.workloadIdentityUser \
      --member="serviceAccount:$PROJECT.svc.id.goog[$NAMESPACE/$account]" --format=none
  done
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
  for s in "${IMAGES[@]}"; do
    printf '  - {name: %s, newName: %s, newTag: "%s"}\n' \
      "$OVERLAY_REGISTRY/anima-$s" "$REGISTRY/anima-$s" "$TAG"
  done
  printf 'patches:\n'
  if [[ -n "$DOMAIN" ]]; then
    printf '  - target: {kind: ManagedCertificate, name: anima}\n'
    printf '    patch: |-\n      - {op: replace, path: /spec/domains, value: ["%s"]}\n' "$DOMAIN"
  fi
  # The engines' egress narrowed from the private ranges to the range they live in.
  local policies=(anima-redis-egress anima-postgres-egress) p
  ((CLOUD_SQL_PROXY == 0)) || policies=(anima-redis-egress anima-cloud-sql-proxy-egress)
  for p in "${policies[@]}"; do
    printf '  - target: {kind: NetworkPolicy, name: %s}\n' "$p"
    printf '    patch: |-\n      - {op: replace, path: /spec/egress/0/to, value: [{ipBlock: {cidr: "%s"}}]}\n' "$psa_cidr"
  done
  # Self-coding's way to the API server: its endpoint and port only.
  printf '  - target: {kind: NetworkPolicy, name: anima-kube-api-egress}\n'
  printf '    patch: |-\n      - {op: replace, path: /spec/egress/0, value: {to: [%s], ports: [{protocol: TCP, port: %s}]}}\n' \
    "$api_peers" "$api_port"
  if ((CLOUD_SQL_PROXY)); then
    printf '  - target: {kind: ConfigMap, name: anima-cloud-sql}\n'
    printf '    patch: |-\n      - {op: replace, path: /data/instance, value: "%s"}\n' "$PROJECT:$REGION:$SQL_INSTANCE"
    for account in anima-cloud-sql anima-self-coding; do
      printf '  - target: {kind: ServiceAccount, name: %s}\n' "$account"
      printf '    patch: |-\n      - {op: replace, path: /metadata/annotations/iam.gke.io~1gcp-service-account, value: "%s"}\n' "$PROXY_GSA"
    done
  fi
}
if ((DRY_RUN)); then
  WORK_SHOWN="<temporary directory>"
  log "the kustomization $WORK_SHOWN/kustomization.yaml would be:"
  kustomization "$ROOT/$OVERLAY"
else
  WORK="$(mktemp -d)"
  WORK_SHOWN="$WORK"
  # kustomize resolves resources relative to the kustomization; link the repository's k8s/.
  ln -s "$ROOT/k8s" "$WORK/k8s"
  kustomization "$OVERLAY" >"$WORK/kustomization.yaml"
fi
[[ -n "$DOMAIN" ]] || log "no --domain: the managed certificate keeps its placeholder and will not provision"

# Before the Deployment anima-self-coding exists: the StatefulSet it replaces (self-coding on
# SQLite, before the jobs moved to PostgreSQL). Its volume is kept, with the jobs of that time
# (docs/operations.md says how to read them); nothing else uses it.
run kubectl delete statefulset anima-self-coding --namespace="$NAMESPACE" --ignore-not-found

log "applying $OVERLAY"
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

# The state URLs: written once (the database user's password generated here), then left alone,
# so a password in use is never changed behind running pods. Rewritten when the Secret lacks a
# URL or reaches PostgreSQL the other way (--cloud-sql-proxy or not); to rotate the password,
# delete the Secret and run this again. The password and the AUTH string are never printed: they
# go from gcloud to files readable by this user only, and from there to the Secret.
state_is_current() {
  if ((DRY_RUN)); then
    run kubectl get secret anima-state --namespace="$NAMESPACE" -o 'jsonpath={.data}'
    return 1
  fi
  local redis_url postgres_url
  redis_url="$(kubectl get secret anima-state --namespace="$NAMESPACE" \
    -o 'jsonpath={.data.redis-url}' 2>/dev/null | base64 -d)"
  postgres_url="$(kubectl get secret anima-state --namespace="$NAMESPACE" \
    -o 'jsonpath={.data.postgres-url}' 2>/dev/null | base64 -d)"
  [[ -n "$redis_url" && -n "$postgres_url" ]] || return 1
  local proxied=0
  [[ "$postgres_url" != *@127.0.0.1:* ]] || proxied=1
  ((proxied == CLOUD_SQL_PROXY))
}
if state_is_current; then
  log "the state URLs exist (Secret anima-state): left as they are"
else
  log "storing the Redis and PostgreSQL URLs in the Secret anima-state (the password is generated, never printed)"
  db_user_found="$(query "" gcloud sql users list --instance="$SQL_INSTANCE" --project="$PROJECT" \
    --filter="name=$DB_USER" --format='value(name)')"
  password="<generated; never printed>"
  if ((!DRY_RUN)); then
    umask 077
    password="$(openssl rand -hex 24)"
  fi
  if [[ "$db_user_found" == "$DB_USER" ]]; then
    run gcloud sql users set-password "$DB_USER" --instance="$SQL_INSTANCE" --project="$PROJECT" \
      --password="$password"
  else
    run gcloud sql users create "$DB_USER" --instance="$SQL_INSTANCE" --project="$PROJECT" \
      --password="$password"
  fi
  redis_where="$(query "<host> <port>" gcloud redis instances describe "$REDIS_INSTANCE" \
    --region="$REGION" --project="$PROJECT" --format='value(host,port)')"
  redis_auth="$(query "<AUTH string>" gcloud redis instances get-auth-string "$REDIS_INSTANCE" \
    --region="$REGION" --project="$PROJECT" --format='value(authString)')"
  # Up to three addresses (public, outgoing, private): the private one.
  sql_addresses="$(query "PRIVATE <address>" gcloud sql instances describe "$SQL_INSTANCE" \
    --project="$PROJECT" --format='value(ipAddresses[0].type,ipAddresses[0].ipAddress,ipAddresses[1].type,ipAddresses[1].ipAddress,ipAddresses[2].type,ipAddresses[2].ipAddress)')"
  if ((DRY_RUN)); then
    run kubectl create secret generic anima-state --namespace="$NAMESPACE" \
      --from-file=redis-url="<temporary file: redis://:<AUTH string>@<host>:<port>/0>" \
      --from-file=postgres-url="<temporary file: postgresql://$DB_USER:<password>@<address>:5432/$DB_NAME?...>" \
      --dry-run=client -o yaml
    run kubectl apply --server-side --field-manager=anima-state --force-conflicts -f -
  else
    read -r redis_host redis_port <<<"$redis_where"
    [[ -n "$redis_host" && "$redis_port" =~ ^[0-9]+$ ]] || die "Memorystore $REDIS_INSTANCE: no host and port"
    [[ -n "$redis_auth" ]] || die "Memorystore $REDIS_INSTANCE: no AUTH string (is AUTH enabled?)"
    read -r -a fields <<<"$sql_addresses"
    sql_ip=""
    for ((i = 0; i + 1 < ${#fields[@]}; i += 2)); do
      if [[ "${fields[i]}" == PRIVATE ]]; then sql_ip="${fields[i + 1]}"; fi
    done
    [[ -n "$sql_ip" ]] || die "Cloud SQL $SQL_INSTANCE: no private IP"
    printf 'redis://:%s@%s:%s/0' "$redis_auth" "$redis_host" "$redis_port" >"$WORK/redis-url"
    if ((CLOUD_SQL_PROXY)); then
      # The sidecar listens in the pod and encrypts to the instance itself.
      printf 'postgresql://%s:%s@127.0.0.1:5432/%s?sslmode=disable' "$DB_USER" "$password" "$DB_NAME"
    else
      printf 'postgresql://%s:%s@%s:5432/%s?sslmode=require' "$DB_USER" "$password" "$sql_ip" "$DB_NAME"
    fi >"$WORK/postgres-url"
    kubectl create secret generic anima-state --namespace="$NAMESPACE" \
      --from-file=redis-url="$WORK/redis-url" --from-file=postgres-url="$WORK/postgres-url" \
      --dry-run=client -o yaml |
      kubectl apply --server-side --field-manager=anima-state --force-conflicts -f -
    unset password redis_auth
  fi
  # The services read the URLs at start.
  run kubectl rollout restart deployment/anima-gateway deployment/anima-router \
    deployment/anima-self-coding --namespace="$NAMESPACE"
fi

log "waiting for the rollout"
for s in gateway router llm-broker self-coding word-count; do
  run kubectl rollout status "deployment/anima-$s" --namespace="$NAMESPACE" --timeout=10m
done
# The warm pool of runner pods fills in the background (Ready against Desired).
run kubectl get sandboxwarmpool anima-runner --namespace="$NAMESPACE"
run kubectl get ingress anima --namespace="$NAMESPACE" \
  -o 'jsonpath={.status.loadBalancer.ingress[0].ip}{"\n"}'
log "done: point ${DOMAIN:-your domain} at the address above; the certificate provisions once DNS resolves"
