#!/usr/bin/env bash
# Checks everything in deploy/ that needs neither a cluster nor a Docker engine:
# Prometheus configs and rules (promtool check, promtool test rules, one test and one runbook per
# alert), Grafana dashboards (generated, well formed, provisioned where compose mounts them),
# the Dockerfile (bookworm, non-root, one target per service, sources present; the runner's root
# filesystem built from bookworm alone), the compose file's shared state (Redis and PostgreSQL
# wired to the services that use them, replicas each scraped), its sandbox runners (each worker's
# own, locked down, on an internal network only that worker shares, the secret from the env file;
# the workers with Docker's seccomp and AppArmor profiles) and `docker-compose config` on it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${ANIMA_SOURCE_DIR:=$(cd "$HERE/../.." && pwd)}"
cd "$ANIMA_SOURCE_DIR"
status=0
fail() {
  echo "FAIL: $*"
  status=1
}
for tool in promtool docker-compose python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing (tools/anima deps installs it)"; exit 1; }
done

# Prometheus.
promtool check config deploy/prometheus/prometheus.yml >/dev/null || fail "promtool check config prometheus.yml"
promtool check config --syntax-only deploy/prometheus/prometheus.compose.yml >/dev/null ||
  fail "promtool check config prometheus.compose.yml"
promtool check rules deploy/prometheus/rules.yml >/dev/null || fail "promtool check rules"
if out="$(cd deploy/prometheus && promtool test rules rules_test.yml 2>&1)"; then
  echo "ok: promtool test rules"
else
  fail "promtool test rules:"
  echo "$out"
fi

python3 - <<'PY' || status=1
import json, pathlib, re, sys, yaml
root = pathlib.Path(".")
bad = []
rules = yaml.safe_load((root / "deploy/prometheus/rules.yml").read_text())
tests = yaml.safe_load((root / "deploy/prometheus/rules_test.yml").read_text())
ops = (root / "docs/operations.md").read_text()
anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.*)$", ops, re.M)}
fired = {a["alertname"] for t in tests["tests"] for a in t["alert_rule_test"] if a["exp_alerts"]}
quiet = {a["alertname"] for t in tests["tests"] for a in t["alert_rule_test"] if not a["exp_alerts"]}
alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
for r in alerts:
    name = r["alert"]
    if name not in fired:
        bad.append(f"alert {name}: no unit test expects it to fire")
    if r["labels"].get("severity") not in ("critical", "warning"):
        bad.append(f"alert {name}: severity must be critical or warning")
    anchor = r["annotations"].get("runbook_url", "").split("#")[-1]
    if anchor != name.lower() or anchor not in anchors:
        bad.append(f"alert {name}: runbook_url must point at a '{name}' section of docs/operations.md")
if not bad:
    print(f"ok: {len(alerts)} alerts, each with a unit test that fires it and a runbook"
          f" ({len(quiet & fired)} also tested quiet)")

# Dashboards.
uids = set()
for path in sorted((root / "deploy/grafana/dashboards").glob("*.json")):
    board = json.loads(path.read_text())
    if board["uid"] in uids:
        bad.append(f"{path.name}: uid {board['uid']} used twice")
    uids.add(board["uid"])
    for p in board["panels"]:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            bad.append(f"{path.name}: panel {p['title']}: not on the $datasource variable")
        if not p.get("targets"):
            bad.append(f"{path.name}: panel {p['title']}: no query")
        for t in p.get("targets", []):
            for var in re.findall(r"\$(\w+)", t["expr"]):
                if var.startswith("__"):
                    continue
                if not re.search(r"=~\"[^\"]*\$" + var, t["expr"]):
                    bad.append(f"{path.name}: {p['title']}: ${var} must be used in a =~ matcher")
if len(uids) < 4:
    bad.append(f"{len(uids)} dashboards, at least 4 expected")
prov = yaml.safe_load((root / "deploy/grafana/provisioning/dashboards/anima.yml").read_text())
compose = yaml.safe_load((root / "deploy/compose/docker-compose.yml").read_text())
mounts = compose["services"]["grafana"]["volumes"]
path = prov["providers"][0]["options"]["path"]
if f"../grafana/dashboards:{path}:ro" not in mounts:
    bad.append(f"compose does not mount the dashboards at the provisioned path {path}")
ds = yaml.safe_load((root / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
if ds["datasources"][0]["type"] != "prometheus":
    bad.append("the provisioned datasource is not Prometheus")

# Dockerfile: bookworm only, one target per compose service, non-root, every COPY source exists.
# The runner's image is scratch plus a root filesystem made in the build stage from bookworm's
# packages (deploy/docker/runner_rootfs.py), so `build` and `scratch` are the other two bases.
docker = (root / "deploy/docker/Dockerfile").read_text()
targets = set(re.findall(r"^FROM \S+ AS (\S+)$", docker, re.M))
if "ARG DEBIAN=debian:bookworm-slim" not in docker:
    bad.append("Dockerfile: the base is not debian:bookworm-slim")
for image, stage in re.findall(r"^FROM (\S+)(?: AS (\S+))?$", docker, re.M):
    if image not in ("${DEBIAN}", "runtime") and (image, stage) not in (("build", "runner-rootfs"),
                                                                        ("scratch", "runner")):
        bad.append(f"Dockerfile: FROM {image} AS {stage}: not the bookworm base or the runtime stage")
runner_stage = docker.split("FROM scratch AS runner", 1)[-1]
if not re.search(r"^COPY --from=runner-rootfs /rootfs/ /$", runner_stage, re.M):
    bad.append("Dockerfile: the runner image is not the root filesystem of runner_rootfs.py")
if not re.search(r"^USER 65532:65532$", runner_stage, re.M):
    bad.append("Dockerfile: the runner does not run as 65532")
if re.search(r"^FROM runtime AS self-coding$(?:(?!^FROM ).)*bubblewrap", docker, re.M | re.S):
    bad.append("Dockerfile: self-coding still installs bubblewrap (its code runs in a runner)")
for src in re.findall(r"^COPY (?!--from)(\S+) ", docker, re.M):
    if src != "." and not (root / src).exists():
        bad.append(f"Dockerfile: COPY {src}: no such file")
stages = re.split(r"^FROM ", docker, flags=re.M)[1:]
for stage in stages:
    name = stage.split()[2] if " AS " in stage.splitlines()[0] else "?"
    users = re.findall(r"^USER (\S+)", stage, re.M)
    if name not in ("build",) and users and users[-1].split(":")[0] in ("root", "0"):
        bad.append(f"Dockerfile: stage {name} ends as root")
for service in ("gateway", "router", "llm-broker", "self-coding", "runner", "llm-sim", "word-count"):
    if service not in targets:
        bad.append(f"Dockerfile: no target {service}")
    build = compose["services"].get(service, {}).get("build", {})
    if build.get("target") != service:
        bad.append(f"compose: service {service} does not build target {service}")
for name, svc in compose["services"].items():
    image = svc.get("image", "")
    if image.endswith(":latest") or ":" not in image:
        bad.append(f"compose: {name}: image {image!r} not pinned")
    if "build" in svc and not svc.get("read_only"):
        bad.append(f"compose: {name}: root filesystem not read-only")

# Compose's shared state: Redis and PostgreSQL with a healthcheck and a named volume; each service
# that keeps shared state gets its engine's URL and waits for the engine to be healthy; more than
# one gateway, router and self-coding; every replica scraped on its own.
services = compose["services"]
for engine, data in (("redis", "/data"), ("postgres", "/var/lib/postgresql/data")):
    svc = services.get(engine, {})
    if "healthcheck" not in svc:
        bad.append(f"compose: {engine}: no healthcheck")
    if not any(v.endswith(":" + data) and v.split(":")[0] in compose.get("volumes", {})
               for v in svc.get("volumes", [])):
        bad.append(f"compose: {engine}: {data} is not on a named volume")
    if svc.get("ports"):
        bad.append(f"compose: {engine}: published on the host")
uses = {"gateway": {"ANIMA_REDIS_URL": "redis", "ANIMA_POSTGRES_URL": "postgres"},
        "gateway-2": {"ANIMA_REDIS_URL": "redis", "ANIMA_POSTGRES_URL": "postgres"},
        "router": {"ANIMA_REDIS_URL": "redis"}, "self-coding": {"ANIMA_POSTGRES_URL": "postgres"}}
for name, urls in uses.items():
    svc = services.get(name, {})
    for var, engine in urls.items():
        url = svc.get("environment", {}).get(var, "")
        if f"@{engine}:" not in url and f"//{engine}:" not in url:
            bad.append(f"compose: {name}: {var} is {url!r}, not the {engine} service")
        if svc.get("depends_on", {}).get(engine, {}).get("condition") != "service_healthy":
            bad.append(f"compose: {name}: does not wait for {engine} to be healthy")
replicas = {n: svc.get("scale", 1) for n, svc in services.items()}
if replicas.get("router", 1) < 2:
    bad.append(f"compose: one router ({replicas.get('router')}), two expected")
def built(target):
    return sorted(n for n, svc in services.items() if svc.get("build", {}).get("target") == target)
gateways, workers, runners = built("gateway"), built("self-coding"), built("runner")
if len(gateways) < 2:
    bad.append(f"compose: gateways {gateways}, two expected")
if len(workers) < 2:
    bad.append(f"compose: self-coding workers {workers}, two expected")
scrape = yaml.safe_load((root / "deploy/prometheus/prometheus.compose.yml").read_text())
discovered = {n for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
def names(name):
    """The DNS names of a service on the default network: its own and its aliases."""
    nets = services[name].get("networks", {})
    default = nets.get("default") if isinstance(nets, dict) else None
    return {name} | set((default or {}).get("aliases", []))
for name in gateways + workers + [n for n, r in replicas.items() if r > 1]:
    if not names(name) & discovered:
        bad.append(f"compose: {name} has replicas, but prometheus.compose.yml does not discover each (dns_sd_configs)")
for name in workers:
    if "self-coding" not in names(name):
        bad.append(f"compose: {name} is not under the name self-coding the routers dial")

# The sandbox runners: each worker runs generated code in a runner of its own (a runner serves one
# attempt at a time for one worker: two workers sharing one would replace each other's
# workspaces), never in itself, and keeps Docker's confinement; a runner is locked down and shares
# an internal network with its worker alone; the secret comes from the env file, never a literal.
def flag(svc, name):
    return next((a.split("=", 1)[1] for a in svc.get("command", []) if a.startswith(f"--{name}=")), None)
def networks(svc):
    nets = svc.get("networks", ["default"])
    return set(nets) if isinstance(nets, list) else set(nets)
served = {}
for name in workers:
    svc = services[name]
    if flag(svc, "sandbox") != "runner":
        bad.append(f"compose: {name}: --sandbox is {flag(svc, 'sandbox')!r}, not runner")
    for opt in svc.get("security_opt", []):
        if "unconfined" in opt:
            bad.append(f"compose: {name}: {opt}: generated code does not run here, nothing needs it")
    if "ANIMA_RUNNER_SECRET" in svc.get("environment", {}):
        bad.append(f"compose: {name}: ANIMA_RUNNER_SECRET written in the compose file")
    for address in (flag(svc, "runner-addresses") or "").split(","):
        runner = address.rsplit(":", 1)[0]
        if runner not in runners:
            bad.append(f"compose: {name}: --runner-addresses names {address!r}, not a runner service")
            continue
        served.setdefault(runner, []).append(name)
        if svc.get("env_file") != services[runner].get("env_file"):
            bad.append(f"compose: {name} and {runner} do not read the same env file (the secret)")
        shared = networks(svc) & networks(services[runner])
        if not shared:
            bad.append(f"compose: {name} shares no network with {runner}")
for runner in runners:
    svc = services[runner]
    where = f"compose: {runner}:"
    if len(served.get(runner, [])) != 1:
        bad.append(f"{where} serves {served.get(runner, [])}, exactly one worker expected")
    if not svc.get("env_file") or "ANIMA_RUNNER_SECRET" in svc.get("environment", {}):
        bad.append(f"{where} the secret is not from the env file")
    if svc.get("ports") or svc.get("expose"):
        bad.append(f"{where} publishes or exposes ports")
    if not svc.get("read_only"):
        bad.append(f"{where} root filesystem not read-only")
    if svc.get("cap_drop") != ["ALL"]:
        bad.append(f"{where} capabilities not all dropped")
    if "no-new-privileges:true" not in svc.get("security_opt", []) or \
            any("unconfined" in o for o in svc.get("security_opt", [])):
        bad.append(f"{where} security_opt {svc.get('security_opt')}: no-new-privileges and Docker's profiles expected")
    if svc.get("restart") != "always":
        bad.append(f"{where} restart is {svc.get('restart')!r}, not always")
    if svc.get("privileged") or svc.get("cap_add") or svc.get("user") or svc.get("volumes"):
        bad.append(f"{where} privileged, cap_add, user or volumes: the image's uid and tmpfs only")
    tmpfs = {t.split(":")[0]: t for t in svc.get("tmpfs", [])}
    if set(tmpfs) != {"/workspace", "/tmp"} or "exec" not in tmpfs["/workspace"].split(":", 1)[-1].split(","):
        bad.append(f"{where} tmpfs {svc.get('tmpfs')}: /workspace (exec, the compiled tests run there) and /tmp expected")
    if "--exit-after-release" in svc.get("command", []):
        bad.append(f"{where} --exit-after-release: a long-lived runner would exit after one attempt")
    for net in networks(svc):
        if not compose.get("networks", {}).get(net, {}).get("internal"):
            bad.append(f"{where} on network {net}, which is not internal")
        others = sorted(n for n, o in services.items() if n != runner and net in networks(o))
        if others != served.get(runner, []):
            bad.append(f"{where} network {net} is shared with {others}, not its worker alone")
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
python3 deploy/grafana/dashboards.py --check || status=1
python3 "$HERE/promql_queries.py" --self-test || status=1
python3 deploy/prometheus/gmp_rules.py --check || status=1

# The runners' env file is the operator's (gitignored); compose needs one to read the file.
env_file="$(mktemp /tmp/anima-ops-runner-env.XXXXXX)"
trap 'rm -f "$env_file"' EXIT
echo "ANIMA_RUNNER_SECRET=stand-in-for-config-only-0123456789abcdef" >"$env_file"
if out="$(ANIMA_RUNNER_ENV_FILE="$env_file" \
  docker-compose -f deploy/compose/docker-compose.yml config -q 2>&1)"; then
  echo "ok: docker-compose config accepts deploy/compose/docker-compose.yml"
else
  fail "docker-compose config:"
  echo "$out"
fi
exit "$status"
