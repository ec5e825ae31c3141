#!/usr/bin/env bash
# Checks everything in deploy/ that needs neither a cluster nor a Docker engine:
# Prometheus configs and rules (promtool check, promtool test rules, one test and one runbook per
# alert), Grafana dashboards (generated, well formed, provisioned where compose mounts them),
# the Dockerfile (bookworm, non-root, one target per service, sources present), the compose
# file's shared state (Redis and PostgreSQL wired to the services that use them, replicas each
# scraped) and `docker-compose config` on it.
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
docker = (root / "deploy/docker/Dockerfile").read_text()
targets = set(re.findall(r"^FROM \S+ AS (\S+)$", docker, re.M))
if "ARG DEBIAN=debian:bookworm-slim" not in docker:
    bad.append("Dockerfile: the base is not debian:bookworm-slim")
for image in re.findall(r"^FROM (\S+)", docker, re.M):
    if image not in ("${DEBIAN}", "runtime") :
        bad.append(f"Dockerfile: FROM {image}: not the bookworm base or the runtime stage")
for src in re.findall(r"^COPY (?!--from)(\S+) ", docker, re.M):
    if src != "." and not (root / src).exists():
        bad.append(f"Dockerfile: COPY {src}: no such file")
stages = re.split(r"^FROM ", docker, flags=re.M)[1:]
for stage in stages:
    name = stage.split()[2] if " AS " in stage.splitlines()[0] else "?"
    users = re.findall(r"^USER (\S+)", stage, re.M)
    if name not in ("build",) and users and users[-1].split(":")[0] in ("root", "0"):
        bad.append(f"Dockerfile: stage {name} ends as root")
for service in ("gateway", "router", "llm-broker", "self-coding", "llm-sim", "word-count"):
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
if replicas.get("router", 1) < 2 or replicas.get("self-coding", 1) < 2:
    bad.append(f"compose: one router or self-coding ({replicas.get('router')}, {replicas.get('self-coding')}), two expected")
gateways = sorted(n for n, svc in services.items() if svc.get("build", {}).get("target") == "gateway")
if len(gateways) < 2:
    bad.append(f"compose: gateways {gateways}, two expected")
scrape = yaml.safe_load((root / "deploy/prometheus/prometheus.compose.yml").read_text())
discovered = {n for job in scrape["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]}
for name in gateways + [n for n, r in replicas.items() if r > 1]:
    if name not in discovered:
        bad.append(f"compose: {name} has replicas, but prometheus.compose.yml does not discover each (dns_sd_configs)")
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
python3 deploy/grafana/dashboards.py --check || status=1
python3 "$HERE/promql_queries.py" --self-test || status=1
python3 deploy/prometheus/gmp_rules.py --check || status=1

if out="$(docker-compose -f deploy/compose/docker-compose.yml config -q 2>&1)"; then
  echo "ok: docker-compose config accepts deploy/compose/docker-compose.yml"
else
  fail "docker-compose config:"
  echo "$out"
fi
exit "$status"
