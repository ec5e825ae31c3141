#!/usr/bin/env python3
"""The project's own rules for the rendered manifests (a JSON array of objects on stdin).

  policy.py [--overlay gke]     exit 1 and print every violation
  policy.py --self-test         check that each rule catches a broken copy of the manifests

Rules: images pinned (a tag, never latest; from a registry in an overlay); pods non-root with a
read-only root filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault
seccomp, no service account token; requests and memory limits; liveness and readiness probes
(gRPC for gRPC services); a PodDisruptionBudget for every multi-replica workload; every dns:///
target names a headless Service with that port; every Secret and ConfigMap a pod uses exists;
the gateway's grace period covers preStop + drain, and the load balancer's draining covers the
drain; a gateway listening beyond loopback has auth on (a keys file from a Secret, or a JWT
secret) and never --allow-unauthenticated; a default-deny NetworkPolicy; on GKE every metrics
port has a PodMonitoring."""
import copy
import json
import re
import sys


def pod_specs(objs):
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield o, o["spec"]["template"]["spec"]


def arg_value(container, flag):
    for a in container.get("args", []):
        if a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
    return None


def prestop_seconds(container):
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return pre["sleep"]["seconds"]
    cmd = pre.get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0] == "sleep":
        return float(cmd[1])
    return 0


def check(objs, overlay=None):
    errors = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    def err(o, msg):
        errors.append(f"{o['kind']}/{o['metadata']['name']}: {msg}")

    if "default-deny" not in by_kind.get("NetworkPolicy", {}):
        errors.append("no default-deny NetworkPolicy")
    for o in objs:
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != "anima":
            err(o, f"namespace is {o['metadata'].get('namespace')!r}, not 'anima'")

    for o, spec in pod_specs(objs):
        name = o["metadata"]["name"]
        psc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            err(o, "automountServiceAccountToken must be false")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(o, "pod seccompProfile must be RuntimeDefault")
        replicas = o["spec"].get("replicas", 1)
        if replicas > 1:
            pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                    if p["spec"]["selector"].get("matchLabels", {}).items()
                    <= o["spec"]["template"]["metadata"]["labels"].items()]
            if not pdbs:
                err(o, f"{replicas} replicas and no PodDisruptionBudget")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"container {c['name']}"
            image = c.get("image", "")
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            if not tag or tag == "latest":
                err(o, f"{where}: image {image!r} is not pinned to a tag")
            if overlay and "/" not in image:
                err(o, f"{where}: image {image!r} is not from a registry")
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                err(o, f"{where}: runAsNonRoot is not set")
            if sc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
                err(o, f"{where}: no non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                err(o, f"{where}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                err(o, f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                err(o, f"{where}: privileged")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                err(o, f"{where}: capabilities must drop ALL")
            res = c.get("resources", {})
            for r in ("cpu", "memory"):
                if r not in res.get("requests", {}):
                    err(o, f"{where}: no {r} request")
            if "memory" not in res.get("limits", {}):
                err(o, f"{where}: no memory limit")
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    err(o, f"{where}: no {probe}")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if "grpc" in ports:
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if probe in c and c[probe].get("grpc", {}).get("port") != ports["grpc"]:
                        err(o, f"{where}: {probe} is not a gRPC health check on the gRPC port")
            if "metrics" not in ports:
                err(o, f"{where}: no port named metrics")
            elif overlay == "gke" and name not in by_kind.get("PodMonitoring", {}):
                err(o, f"{where}: no PodMonitoring named {name}")
            # Every dns:/// target resolves to a headless Service with that port.
            for a in c.get("args", []):
                m = re.search(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", a)
                if not m:
                    continue
                svc = by_kind.get("Service", {}).get(m.group(1))
                if svc is None or m.group(2) != svc["metadata"].get("namespace"):
                    err(o, f"{where}: {a}: no such Service")
                elif svc["spec"].get("clusterIP") != "None":
                    err(o, f"{where}: {a}: the Service is not headless (no client-side balancing)")
                elif int(m.group(3)) not in [p["port"] for p in svc["spec"]["ports"]]:
                    err(o, f"{where}: {a}: the Service has no port {m.group(3)}")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in by_kind.get("Secret", {}):
                    err(o, f"{where}: env {e['name']}: no Secret {ref['name']}")
            args = " ".join(c.get("args", []))
            if "--allow-unauthenticated" in args:
                err(o, f"{where}: --allow-unauthenticated: anyone who reaches it spends the keys")
            is_gateway = "anima-gateway" in image
            if is_gateway and arg_value(c, "bind") not in (None, "127.0.0.1", "::1"):
                if not (arg_value(c, "auth-keys-file") or arg_value(c, "auth-jwt-secret-file")):
                    err(o, f"{where}: listens on {arg_value(c, 'bind')} without auth "
                           "(--auth-keys-file or --auth-jwt-secret-file)")
            if "--drain-timeout-ms" in args:
                drain = int(arg_value(c, "drain-timeout-ms")) / 1000
                grace = spec.get("terminationGracePeriodSeconds", 30)
                pre = prestop_seconds(c)
                if pre <= 0:
                    err(o, f"{where}: drains on SIGTERM but has no preStop delay")
                if grace <= pre + drain:
                    err(o, f"{where}: terminationGracePeriodSeconds {grace} does not cover "
                           f"preStop {pre} s + drain {drain} s")
                if overlay == "gke":
                    svc = by_kind.get("Service", {}).get(name, {})
                    ann = svc.get("metadata", {}).get("annotations", {})
                    bc_name = json.loads(ann.get("cloud.google.com/backend-config", "{}")).get("default")
                    bc = by_kind.get("BackendConfig", {}).get(bc_name)
                    if bc is None:
                        err(o, "the gateway Service has no BackendConfig")
                    else:
                        if bc["spec"].get("timeoutSec", 30) < 600:
                            err(bc, "timeoutSec under 600 s cuts WebSocket connections")
                        if bc["spec"].get("connectionDraining", {}).get("drainingTimeoutSec", 0) < drain:
                            err(bc, "connection draining shorter than the gateway's drain")
        for v in spec.get("volumes", []):
            cm = v.get("configMap", {}).get("name")
            if cm and cm not in by_kind.get("ConfigMap", {}):
                err(o, f"volume {v['name']}: no ConfigMap {cm}")
            secret = v.get("secret", {}).get("secretName")
            if secret and secret not in by_kind.get("Secret", {}):
                err(o, f"volume {v['name']}: no Secret {secret}")
        if o["kind"] == "StatefulSet":
            claims = {t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates", [])}
            mounts = {m["name"]: m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            data_dir = next((arg_value(c, "data-dir") for c in spec["containers"] if arg_value(c, "data-dir")), None)
            on_claim = data_dir is not None and any(
                mounts.get(n) and (data_dir + "/").startswith(mounts[n].rstrip("/") + "/")
                for n in claims)
            if not claims or not on_claim:
                err(o, "the --data-dir is not on a volumeClaimTemplate")
    return errors


def self_test(objs):
    """Every rule must catch a copy of the manifests broken for it."""
    def breaking(f):
        broken = copy.deepcopy(objs)
        f(broken)
        return check(broken, "gke")

    def first(objs, kind, name=None):
        return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))

    def container(objs, name="anima-gateway"):
        return first(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]

    cases = {
        "latest image": lambda b: container(b).update(image="anima-gateway:latest"),
        "writable root": lambda b: container(b)["securityContext"].update(readOnlyRootFilesystem=False),
        "root user": lambda b: (container(b)["securityContext"].pop("runAsNonRoot"),
                                first(b, "Deployment", "anima-gateway")["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")),
        "no requests": lambda b: container(b)["resources"].pop("requests"),
        "no readiness": lambda b: container(b).pop("readinessProbe"),
        "short grace": lambda b: first(b, "Deployment", "anima-gateway")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=10),
        "not headless": lambda b: first(b, "Service", "anima-llm-broker")["spec"].update(clusterIP="10.0.0.1"),
        "no pdb": lambda b: b.remove(first(b, "PodDisruptionBudget", "anima-router")),
        "no pod monitoring": lambda b: b.remove(first(b, "PodMonitoring", "anima-router")),
        "no data volume": lambda b: first(b, "StatefulSet")["spec"].pop("volumeClaimTemplates"),
        "short lb timeout": lambda b: first(b, "BackendConfig")["spec"].update(timeoutSec=30),
        "http probe on grpc": lambda b: container(b, "anima-router").update(readinessProbe={"httpGet": {"path": "/", "port": 50051}}),
        "public without auth": lambda b: container(b).update(
            args=[a for a in container(b)["args"] if not a.startswith("--auth-")]),
        "allow unauthenticated": lambda b: container(b)["args"].append("--allow-unauthenticated"),
        "no auth secret": lambda b: b.remove(first(b, "Secret", "anima-gateway-auth")),
    }
    failed = []
    for what, f in cases.items():
        if not breaking(f):
            failed.append(what)
    for what in failed:
        print(f"FAIL self-test: the policy does not catch: {what}")
    if not failed:
        print(f"ok: the policy catches each of {len(cases)} broken copies")
    return 1 if failed else 0


def main():
    objs = json.load(sys.stdin)
    if "--self-test" in sys.argv:
        return self_test(objs)
    overlay = sys.argv[sys.argv.index("--overlay") + 1] if "--overlay" in sys.argv else None
    errors = check(objs, overlay)
    for e in errors:
        print("FAIL policy:", e)
    if not errors:
        print(f"ok: {len(objs)} objects meet the policy" + (f" ({overlay})" if overlay else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
