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
port has a PodMonitoring.

Scale-out: every HorizontalPodAutoscaler scales a workload that exists, whose replicas lie within
its range, and a workload that can run more than one replica has a PodDisruptionBudget; the
shared-state URLs (ANIMA_REDIS_URL, ANIMA_POSTGRES_URL) come from one Secret, never from a
literal; no Secret in the manifests carries data; a Deployment with a --data-dir (whose volume
dies with the pod) requires ANIMA_POSTGRES_URL; a pod that reads a state URL may reach its
engine (Redis 6379, PostgreSQL 5432, or 3307 through a Cloud SQL Auth Proxy sidecar) and a pod
that does not read it may not; sidecars (init containers that keep running) have liveness and
startup probes; a pod's service account exists.

Self-coding on Agent Sandbox: the namespace enforces the restricted Pod Security Standard and
every pod meets it, the runner pods of each SandboxTemplate too; a runner template runs under
gVisor, without a service account token or Service links, with a read-only root, only emptyDir
volumes of bounded size, CPU and memory requests and limits, and a gRPC readiness probe; its
networkPolicy is Managed, lets nothing out and lets in only self-coding's pods on the runner's
port, and no NetworkPolicy of the namespace gives the runner pods anything (not even DNS); a
pod that mounts a service account token has its own account and a bound token of an hour at
most; Roles grant nothing but create, get, list and delete on sandboxclaims, and never through
a ClusterRole; a container with --sandbox=agent-sandbox has that token where in-cluster clients
look for it, its account may do exactly that to claims, its warm pool and template exist, its
--runner-port is the runners' port, and NetworkPolicies let it reach the runner pods there and
the API server."""
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


# The shared-state URLs: environment variable -> (key in the state Secret, engine's port).
STATE_URLS = {"ANIMA_REDIS_URL": ("redis-url", 6379), "ANIMA_POSTGRES_URL": ("postgres-url", 5432)}
CLOUD_SQL_PROXY_PORT = 3307


def is_sidecar(container):
    """An init container that keeps running beside the app (Kubernetes' native sidecars)."""
    return container.get("restartPolicy") == "Always"


def selects(selector, labels):
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def egress_ports(objs, labels):
    """The TCP ports a pod with these labels may reach (None in the set: any port)."""
    ports = set()
    for np in objs:
        if np["kind"] != "NetworkPolicy" or "Egress" not in np["spec"].get("policyTypes", []):
            continue
        if not selects(np["spec"].get("podSelector", {}), labels):
            continue
        for rule in np["spec"].get("egress", []):
            if not rule.get("ports"):
                ports.add(None)
            for p in rule.get("ports", []):
                if p.get("protocol", "TCP") == "TCP":
                    ports.add(p.get("port"))
    return ports


# The restricted Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards),
# as the admission controller of a namespace enforcing it checks a pod.
PSS_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret"}
PSS_SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                    "net.ipv4.tcp_keepalive_probes"}
PSS_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec):
    """What in a pod spec the restricted Pod Security Standard refuses (empty: it passes)."""
    bad = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad.append(field)
    psc = spec.get("securityContext", {})
    containers = [c for k in ("containers", "initContainers", "ephemeralContainers") for c in spec.get(k, [])]
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= PSS_VOLUME_TYPES:
            bad.append(f"volume {v['name']} is {', '.join(sorted(kinds - PSS_VOLUME_TYPES))}")
    for sysctl in psc.get("sysctls", []):
        if sysctl.get("name") not in PSS_SAFE_SYSCTLS:
            bad.append(f"sysctl {sysctl.get('name')}")

    def context_violations(sc, where):
        out = []
        if sc.get("runAsUser") == 0:
            out.append(f"{where}runAsUser 0")
        se = sc.get("seLinuxOptions", {})
        if se.get("type") not in PSS_SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"{where}seLinuxOptions {se}")
        if sc.get("seccompProfile", {}).get("type") == "Unconfined":
            out.append(f"{where}seccompProfile Unconfined")
        if sc.get("appArmorProfile", {}).get("type") == "Unconfined":
            out.append(f"{where}appArmorProfile Unconfined")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            out.append(f"{where}hostProcess")
        return out

    bad += context_violations(psc, "pod ")
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}: "
        bad += context_violations(sc, where)
        if sc.get("privileged"):
            bad.append(f"{where}privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{where}does not drop ALL capabilities")
        for cap in caps.get("add", []):
            if cap != "NET_BIND_SERVICE":
                bad.append(f"{where}adds capability {cap}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{where}procMount {sc['procMount']}")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            bad.append(f"{where}hostPort")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{where}runAsNonRoot is not true")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{where}seccompProfile is not RuntimeDefault or Localhost")
    return bad


# What Anima's pods may do with the Kubernetes API: self-coding's SandboxClaims, nothing else.
CLAIMS_GROUP, CLAIMS_RESOURCE = "extensions.agents.x-k8s.io", "sandboxclaims"
CLAIM_VERBS = {"create", "get", "list", "delete"}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def token_sources(spec):
    """volume name -> the projected serviceAccountToken source in it."""
    return {v["name"]: src["serviceAccountToken"] for v in spec.get("volumes", [])
            for src in v.get("projected", {}).get("sources", []) if "serviceAccountToken" in src}


def granted(objs, by_kind, account):
    """(apiGroup, resource, verb) a ServiceAccount of the namespace gets from RoleBindings."""
    grants = set()
    for rb in by_kind.get("RoleBinding", {}).values():
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in rb.get("subjects", [])):
            continue
        role = by_kind.get(rb["roleRef"]["kind"], {}).get(rb["roleRef"]["name"], {})
        for rule in role.get("rules", []):
            grants |= {(g, r, v) for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
                       for v in rule.get("verbs", [])}
    return grants


def egress_reaches(objs, labels, target_labels, port):
    """Whether some NetworkPolicy lets pods with `labels` reach pods with `target_labels` on `port`."""
    for np in objs:
        if np["kind"] != "NetworkPolicy" or not selects(np["spec"].get("podSelector", {}), labels):
            continue
        for rule in np["spec"].get("egress", []):
            ports = [p.get("port") for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for peer in rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer \
                        and selects(peer["podSelector"], target_labels):
                    return True
    return False


def check_sandboxes(objs, by_kind, err, overlay):
    """The rules of self-coding on Agent Sandbox (see the module's docstring)."""
    errors = []
    ns = by_kind.get("Namespace", {}).get("anima")
    if ns is None or ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        errors.append("Namespace/anima: does not enforce the restricted Pod Security Standard "
                      "(label pod-security.kubernetes.io/enforce: restricted)")
    pods = list(pod_specs(objs))
    pods += [(t, t["spec"]["podTemplate"]["spec"]) for t in by_kind.get("SandboxTemplate", {}).values()]
    for o, spec in pods:
        for v in restricted_violations(spec):
            err(o, f"not restricted (Pod Security Standard): {v}")
        for name, token in token_sources(spec).items():
            account = spec.get("serviceAccountName", "default")
            if account == "default":
                err(o, f"volume {name}: a service account token of the namespace's default account")
            if token.get("expirationSeconds", 3600) > 3600:
                err(o, f"volume {name}: token expirationSeconds {token['expirationSeconds']} over an hour")
            if token.get("audience"):
                err(o, f"volume {name}: token for the audience {token['audience']!r}, not the API server")

    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for o in by_kind.get(kind, {}).values():
            err(o, "cluster-wide RBAC: Anima needs none")
    for rb in by_kind.get("RoleBinding", {}).values():
        if rb["roleRef"]["kind"] != "Role" or rb["roleRef"]["name"] not in by_kind.get("Role", {}):
            err(rb, f"binds {rb['roleRef']['kind']} {rb['roleRef']['name']}, not a Role of the manifests")
    for role in by_kind.get("Role", {}).values():
        for rule in role.get("rules", []):
            extra = ({f"apiGroup {g!r}" for g in rule.get("apiGroups", []) if g != CLAIMS_GROUP}
                     | {f"resource {r}" for r in rule.get("resources", []) if r != CLAIMS_RESOURCE}
                     | {f"verb {v}" for v in rule.get("verbs", []) if v not in CLAIM_VERBS}
                     | {k for k in ("resourceNames", "nonResourceURLs") if rule.get(k)})
            if extra:
                err(role, f"grants more than {'/'.join(sorted(CLAIM_VERBS))} on {CLAIMS_RESOURCE}: "
                          + ", ".join(sorted(extra)))

    # The runner templates: what confines generated code.
    runner_ports = {}
    for t in by_kind.get("SandboxTemplate", {}).values():
        name = t["metadata"]["name"]
        spec = t["spec"]["podTemplate"]["spec"]
        labels = t["spec"]["podTemplate"].get("metadata", {}).get("labels", {})
        if spec.get("runtimeClassName") != "gvisor":
            err(t, f"runtimeClassName is {spec.get('runtimeClassName')!r}, not 'gvisor'")
        if spec.get("automountServiceAccountToken") is not False:
            err(t, "automountServiceAccountToken must be false")
        if spec.get("enableServiceLinks") is not False:
            err(t, "enableServiceLinks must be false")
        for v in spec.get("volumes", []):
            if set(v) - {"name"} != {"emptyDir"}:
                err(t, f"volume {v['name']}: a runner pod holds nothing but emptyDir scratch space")
            elif not v["emptyDir"].get("sizeLimit"):
                err(t, f"volume {v['name']}: emptyDir without a sizeLimit")
        psc = spec.get("securityContext", {})
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(t, "pod seccompProfile must be RuntimeDefault")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                err(t, f"{where}: readOnlyRootFilesystem must be true")
            if sc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
                err(t, f"{where}: no non-zero runAsUser")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        err(t, f"{where}: no {r} {kind[:-1]}")
            image = c.get("image", "")
            if ":" not in image.split("/")[-1] or image.endswith(":latest"):
                err(t, f"{where}: image {image!r} is not pinned to a tag")
            if overlay and "/" not in image:
                err(t, f"{where}: image {image!r} is not from a registry")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if "grpc" not in ports:
                err(t, f"{where}: no port named grpc")
            elif c.get("readinessProbe", {}).get("grpc", {}).get("port") != ports["grpc"]:
                err(t, f"{where}: readinessProbe is not a gRPC health check on the gRPC port")
            else:
                runner_ports[name] = ports["grpc"]
        np = t["spec"].get("networkPolicy")
        if t["spec"].get("networkPolicyManagement", "Managed") != "Managed":
            err(t, "networkPolicyManagement is Unmanaged: the runner pods would have no policy of their own")
        if np is None:
            err(t, "no networkPolicy: the controller's default lets the runner pods reach the internet")
        else:
            if np.get("egress"):
                err(t, f"networkPolicy allows egress {np['egress']}: the runner pods must reach nothing")
            port = runner_ports.get(name)
            if not np.get("ingress"):
                err(t, "networkPolicy allows no ingress: self-coding cannot reach the runners")
            for rule in np.get("ingress", []):
                peers = rule.get("from", [])
                if not peers or any(set(p) != {"podSelector"} or p["podSelector"] != {
                        "matchLabels": {"app.kubernetes.io/name": "anima-self-coding"}} for p in peers):
                    err(t, f"networkPolicy ingress from {peers or 'anywhere'}: only self-coding's pods may connect")
                if [(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])] != [("TCP", port)]:
                    err(t, f"networkPolicy ingress on {rule.get('ports', 'every port')}: only the runner's port {port}")
        for other in by_kind.get("NetworkPolicy", {}).values():
            if selects(other["spec"].get("podSelector", {}), labels) and \
                    (other["spec"].get("ingress") or other["spec"].get("egress")):
                err(other, f"selects the runner pods of {name} and lets traffic in or out")

    pools = by_kind.get("SandboxWarmPool", {})
    for pool in pools.values():
        ref = pool["spec"]["sandboxTemplateRef"]["name"]
        if ref not in by_kind.get("SandboxTemplate", {}):
            err(pool, f"no SandboxTemplate {ref}")

    # Self-coding's side: its token, its rights, its pool, its ways to the runners and the API.
    for o, spec in pod_specs(objs):
        labels = o["spec"]["template"]["metadata"]["labels"]
        for c in spec.get("containers", []):
            if arg_value(c, "sandbox") != "agent-sandbox":
                continue
            where = f"container {c['name']}"
            account = spec.get("serviceAccountName", "default")
            tokens = token_sources(spec)
            mounted = [m for m in c.get("volumeMounts", []) if m["name"] in tokens]
            if not any(m["mountPath"] == SERVICE_ACCOUNT_DIR for m in mounted):
                err(o, f"{where}: --sandbox=agent-sandbox and no service account token at {SERVICE_ACCOUNT_DIR}")
            wanted = {(CLAIMS_GROUP, CLAIMS_RESOURCE, v) for v in CLAIM_VERBS}
            got = granted(objs, by_kind, account)
            if got != wanted:
                err(o, f"{where}: its ServiceAccount {account} may {sorted(got)}, not exactly "
                       f"{'/'.join(sorted(CLAIM_VERBS))} on {CLAIMS_RESOURCE}")
            pool_name = arg_value(c, "agent-sandbox-warm-pool") or "anima-runner"
            pool = pools.get(pool_name)
            if pool is None:
                err(o, f"{where}: no SandboxWarmPool {pool_name}")
                continue
            template = by_kind.get("SandboxTemplate", {}).get(pool["spec"]["sandboxTemplateRef"]["name"])
            if template is None:
                continue
            port = runner_ports.get(template["metadata"]["name"])
            runner_port = int(arg_value(c, "runner-port") or 7070)
            if port is not None and runner_port != port:
                err(o, f"{where}: --runner-port {runner_port}, but the runners listen on {port}")
            runner_labels = template["spec"]["podTemplate"].get("metadata", {}).get("labels", {})
            if not egress_reaches(objs, labels, runner_labels, runner_port):
                err(o, f"{where}: no NetworkPolicy lets it reach the runner pods on {runner_port}")
            if not {443, 6443} & egress_ports(objs, labels) and None not in egress_ports(objs, labels):
                err(o, f"{where}: no NetworkPolicy lets it reach the Kubernetes API server (443 or 6443)")
    return errors


def check(objs, overlay=None):
    errors = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    def err(o, msg):
        errors.append(f"{o['kind']}/{o['metadata']['name']}: {msg}")

    if "default-deny" not in by_kind.get("NetworkPolicy", {}):
        errors.append("no default-deny NetworkPolicy")
    # Manifests never hold credentials: Secrets are declared empty and filled by deploy.sh or
    # kubectl under their own field managers (docs/operations.md).
    for secret in by_kind.get("Secret", {}).values():
        if secret.get("data") or secret.get("stringData"):
            err(secret, "carries data: credentials never live in the manifests")
    hpas = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        if target is None:
            err(hpa, f"scales {ref['kind']} {ref['name']}, which does not exist")
            continue
        hpas[(ref["kind"], ref["name"])] = hpa
        low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
        replicas = target["spec"].get("replicas", 1)
        if not low <= replicas <= high:
            err(target, f"replicas {replicas} outside its HPA's range {low} to {high}")
    state_secrets = {}
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
        hpa = hpas.get((o["kind"], name))
        if hpa:
            replicas = max(replicas, hpa["spec"]["maxReplicas"])
        if replicas > 1:
            pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                    if p["spec"]["selector"].get("matchLabels", {}).items()
                    <= o["spec"]["template"]["metadata"]["labels"].items()]
            if not pdbs:
                err(o, f"{replicas} replicas and no PodDisruptionBudget")
        labels = o["spec"]["template"]["metadata"]["labels"]
        account = spec.get("serviceAccountName")
        if account and account != "default" and account not in by_kind.get("ServiceAccount", {}):
            err(o, f"no ServiceAccount {account}")
        sidecars = [c for c in spec.get("initContainers", []) if is_sidecar(c)]
        state_used = set()
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"container {c['name']}"
            app = c in spec.get("containers", [])
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
            # Apps: liveness and readiness. Sidecars: liveness and startup (a sidecar's readiness
            # would take the pod out of service for what the app handles itself, such as the
            # database being away). Init containers that run to completion cannot have probes.
            needed = (("livenessProbe", "readinessProbe") if app else
                      ("livenessProbe", "startupProbe") if is_sidecar(c) else ())
            for probe in needed:
                if probe not in c:
                    err(o, f"{where}: no {probe}")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            if "grpc" in ports:
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if probe in c and c[probe].get("grpc", {}).get("port") != ports["grpc"]:
                        err(o, f"{where}: {probe} is not a gRPC health check on the gRPC port")
            # The pod's metrics are its app's (a sidecar's port names cannot repeat the app's).
            if app and "metrics" not in ports:
                err(o, f"{where}: no port named metrics")
            elif app and overlay == "gke" and name not in by_kind.get("PodMonitoring", {}):
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
                cm_ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if cm_ref and cm_ref["name"] not in by_kind.get("ConfigMap", {}):
                    err(o, f"{where}: env {e['name']}: no ConfigMap {cm_ref['name']}")
                if e["name"] in STATE_URLS:
                    key = STATE_URLS[e["name"]][0]
                    if not ref:
                        err(o, f"{where}: env {e['name']} is not from a Secret: its URL holds a password")
                        continue
                    state_used.add(e["name"])
                    state_secrets.setdefault(ref["name"], []).append(f"{name}/{e['name']}")
                    if ref["key"] != key:
                        err(o, f"{where}: env {e['name']} reads key {ref['key']!r}, not {key!r}")
                    if "--data-dir" in " ".join(c.get("args", [])) and e["name"] == "ANIMA_POSTGRES_URL" \
                            and o["kind"] == "Deployment" and ref.get("optional"):
                        err(o, f"{where}: ANIMA_POSTGRES_URL is optional: the replicas would each "
                               "keep jobs on a volume that dies with the pod")
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
        # A Deployment's --data-dir dies with its pod and is not shared: its jobs must be in
        # PostgreSQL.
        if o["kind"] == "Deployment" and any(arg_value(c, "data-dir") for c in spec["containers"]) \
                and "ANIMA_POSTGRES_URL" not in state_used:
            err(o, "a Deployment with a --data-dir and no ANIMA_POSTGRES_URL: its jobs would die "
                   "with the pod, and replicas would not share them")
        # Each engine reachable by the pods that use it, and by no other.
        reachable = egress_ports(objs, labels)
        proxied = any("cloud-sql-proxy" in c.get("image", "") for c in sidecars)
        for env, (_, port) in STATE_URLS.items():
            if env == "ANIMA_POSTGRES_URL" and proxied:
                port = CLOUD_SQL_PROXY_PORT
            if env in state_used and None not in reachable and port not in reachable:
                err(o, f"reads {env} but no NetworkPolicy lets it reach port {port}")
            if env not in state_used and port in reachable:
                err(o, f"does not use {env} but a NetworkPolicy lets it reach port {port}")
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
    if len(state_secrets) > 1:
        errors.append("the state URLs come from more than one Secret (they must all read one): "
                      + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(state_secrets.items())))
    errors += check_sandboxes(objs, by_kind, err, overlay)
    return errors


def self_test(objs):
    """Every rule must catch a copy of the manifests broken for it, by naming what is wrong; and the
    manifests themselves must pass, or every case would be caught for the wrong reason."""
    def first(objs, kind, name=None):
        return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))

    def pod(objs, name="anima-gateway"):
        return first(objs, "Deployment", name)["spec"]["template"]["spec"]

    def container(objs, name="anima-gateway"):
        return pod(objs, name)["containers"][0]

    def env(objs, name, var):
        return next(e for e in container(objs, name)["env"] if e["name"] == var)

    def as_statefulset(b):
        o = first(b, "Deployment", "anima-self-coding")
        o["kind"] = "StatefulSet"
        o["spec"]["serviceName"] = "anima-self-coding"

    def second_state_secret(b):
        b.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "anima-state-2", "namespace": "anima"}})
        env(b, "anima-router", "ANIMA_REDIS_URL")["valueFrom"]["secretKeyRef"]["name"] = "anima-state-2"

    def sidecar_without_probes(b):
        side = {k: v for k, v in container(b).items() if not k.endswith("Probe") and k != "lifecycle"}
        pod(b).setdefault("initContainers", []).append(dict(side, name="proxy", restartPolicy="Always", ports=[]))

    def proxy_without_its_port(b):
        pod(b, "anima-self-coding").setdefault("initContainers", []).append({
            "name": "cloud-sql-proxy", "image": "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.2",
            "restartPolicy": "Always"})

    def literal_state_url(b):
        e = env(b, "anima-router", "ANIMA_REDIS_URL")
        e.pop("valueFrom")
        e["value"] = "redis://:hunter2@10.0.0.3:6379"

    def postgres_egress_for_router(b):
        np = first(b, "NetworkPolicy", "anima-postgres-egress")
        np["spec"]["podSelector"]["matchExpressions"][0]["values"].append("anima-router")

    def template(b):
        return first(b, "SandboxTemplate", "anima-runner")["spec"]

    def runner(b):
        return template(b)["podTemplate"]["spec"]

    def volume(b, name, volume_name):
        return next(v for v in pod(b, name)["volumes"] if v["name"] == volume_name)

    def without_runner_egress(b):
        np = first(b, "NetworkPolicy", "anima-self-coding")
        np["spec"]["egress"] = [r for r in np["spec"]["egress"] if "7070" not in json.dumps(r)]

    def without_token_mount(b):
        c = container(b, "anima-self-coding")
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "kube-api"]

    cases = {
        "latest image": (lambda b: container(b).update(image="anima-gateway:latest"), "not pinned"),
        "writable root": (lambda b: container(b)["securityContext"].update(readOnlyRootFilesystem=False),
                          "readOnlyRootFilesystem"),
        "root user": (lambda b: (container(b)["securityContext"].pop("runAsNonRoot"),
                                 pod(b)["securityContext"].pop("runAsNonRoot")), "runAsNonRoot"),
        "no requests": (lambda b: container(b)["resources"].pop("requests"), "no cpu request"),
        "no readiness": (lambda b: container(b).pop("readinessProbe"), "no readinessProbe"),
        "short grace": (lambda b: pod(b).update(terminationGracePeriodSeconds=10), "does not cover"),
        "not headless": (lambda b: first(b, "Service", "anima-llm-broker")["spec"].update(clusterIP="10.0.0.1"),
                         "not headless"),
        "no pdb": (lambda b: b.remove(first(b, "PodDisruptionBudget", "anima-router")), "no PodDisruptionBudget"),
        "no pod monitoring": (lambda b: b.remove(first(b, "PodMonitoring", "anima-router")), "no PodMonitoring"),
        "statefulset without a claim": (as_statefulset, "not on a volumeClaimTemplate"),
        "short lb timeout": (lambda b: first(b, "BackendConfig")["spec"].update(timeoutSec=30), "cuts WebSocket"),
        "http probe on grpc": (lambda b: container(b, "anima-router").update(
            readinessProbe={"httpGet": {"path": "/", "port": 50051}}), "not a gRPC health check"),
        "public without auth": (lambda b: container(b).update(
            args=[a for a in container(b)["args"] if not a.startswith("--auth-")]), "without auth"),
        "allow unauthenticated": (lambda b: container(b)["args"].append("--allow-unauthenticated"),
                                  "--allow-unauthenticated"),
        "no auth secret": (lambda b: b.remove(first(b, "Secret", "anima-gateway-auth")), "no Secret anima-gateway-auth"),
        # Scale-out.
        "hpa on a missing workload": (lambda b: first(b, "HorizontalPodAutoscaler", "anima-router")["spec"]
                                      ["scaleTargetRef"].update(name="anima-ruoter"), "which does not exist"),
        "replicas outside the hpa": (lambda b: first(b, "Deployment", "anima-gateway")["spec"].update(replicas=1),
                                     "outside its HPA's range"),
        "autoscaled without a pdb": (lambda b: (first(b, "Deployment", "anima-self-coding")["spec"].update(replicas=1),
                                                first(b, "HorizontalPodAutoscaler", "anima-self-coding")["spec"].update(minReplicas=1),
                                                b.remove(first(b, "PodDisruptionBudget", "anima-self-coding"))),
                                     "no PodDisruptionBudget"),
        "state url as a literal": (literal_state_url, "not from a Secret"),
        "state in two secrets": (second_state_secret, "more than one Secret"),
        "wrong state key": (lambda b: env(b, "anima-gateway", "ANIMA_REDIS_URL")["valueFrom"]["secretKeyRef"].update(
            key="postgres-url"), "not 'redis-url'"),
        "credentials in a secret": (lambda b: first(b, "Secret", "anima-state").update(
            data={"redis-url": "cmVkaXM6Ly8="}), "carries data"),
        "self-coding without postgres": (lambda b: container(b, "anima-self-coding").pop("env"),
                                         "no ANIMA_POSTGRES_URL"),
        "self-coding with optional postgres": (lambda b: env(b, "anima-self-coding", "ANIMA_POSTGRES_URL")
                                               ["valueFrom"]["secretKeyRef"].update(optional=True),
                                               "ANIMA_POSTGRES_URL is optional"),
        "redis unreachable": (lambda b: b.remove(first(b, "NetworkPolicy", "anima-redis-egress")),
                              "no NetworkPolicy lets it reach port 6379"),
        "postgres reachable by a non-user": (postgres_egress_for_router, "does not use ANIMA_POSTGRES_URL"),
        "sidecar without probes": (sidecar_without_probes, "container proxy: no startupProbe"),
        "cloud sql proxy unreachable": (proxy_without_its_port, "no NetworkPolicy lets it reach port 3307"),
        "missing service account": (lambda b: pod(b).update(serviceAccountName="nobody"), "no ServiceAccount nobody"),
        # Self-coding on Agent Sandbox.
        "namespace not restricted": (lambda b: first(b, "Namespace", "anima")["metadata"]["labels"].update(
            {"pod-security.kubernetes.io/enforce": "baseline"}), "does not enforce the restricted"),
        "self-coding not restricted": (lambda b: container(b, "anima-self-coding")["securityContext"].update(
            capabilities={"drop": ["ALL"], "add": ["SYS_PTRACE"]}), "adds capability SYS_PTRACE"),
        "runner not restricted": (lambda b: runner(b).update(hostNetwork=True), "Pod Security Standard): hostNetwork"),
        "runner without gvisor": (lambda b: runner(b).pop("runtimeClassName"), "not 'gvisor'"),
        "runner with a token": (lambda b: runner(b).update(automountServiceAccountToken=True),
                                "SandboxTemplate/anima-runner: automountServiceAccountToken"),
        "runner with service links": (lambda b: runner(b).pop("enableServiceLinks"), "enableServiceLinks"),
        "runner writable root": (lambda b: runner(b)["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False), "SandboxTemplate/anima-runner: container runner: readOnlyRootFilesystem"),
        "runner without a cpu limit": (lambda b: runner(b)["containers"][0]["resources"]["limits"].pop("cpu"),
                                       "no cpu limit"),
        "runner with a secret": (lambda b: runner(b)["volumes"].append(
            {"name": "keys", "secret": {"secretName": "anima-provider-keys"}}), "nothing but emptyDir"),
        "runner egress": (lambda b: template(b)["networkPolicy"].update(
            egress=[{"ports": [{"protocol": "UDP", "port": 53}]}]), "the runner pods must reach nothing"),
        "runner ingress from anywhere": (lambda b: template(b)["networkPolicy"]["ingress"][0].pop("from"),
                                         "only self-coding's pods may connect"),
        "runner ingress on every port": (lambda b: template(b)["networkPolicy"]["ingress"][0].pop("ports"),
                                         "only the runner's port"),
        "runner policy unmanaged": (lambda b: template(b).update(networkPolicyManagement="Unmanaged"), "Unmanaged"),
        "runner with default policy": (lambda b: template(b).pop("networkPolicy"), "controller's default"),
        "dns for the runners": (lambda b: first(b, "NetworkPolicy", "anima-dns-egress")["spec"].update(podSelector={}),
                                "selects the runner pods"),
        "role grants more": (lambda b: first(b, "Role", "anima-self-coding")["rules"].append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), "resource secrets"),
        "role grants watch": (lambda b: first(b, "Role", "anima-self-coding")["rules"][0]["verbs"].append("watch"),
                              "verb watch"),
        "self-coding may not delete claims": (lambda b: first(b, "Role", "anima-self-coding")["rules"][0]
                                              ["verbs"].remove("delete"), "not exactly create/delete/get/list"),
        "self-coding without a token": (without_token_mount, "no service account token at"),
        "long-lived token": (lambda b: volume(b, "anima-self-coding", "kube-api")["projected"]["sources"][0]
                             ["serviceAccountToken"].update(expirationSeconds=86400), "over an hour"),
        "no warm pool": (lambda b: b.remove(first(b, "SandboxWarmPool")), "no SandboxWarmPool anima-runner"),
        "wrong runner port": (lambda b: container(b, "anima-self-coding").update(args=[
            "--runner-port=7071" if a.startswith("--runner-port=") else a
            for a in container(b, "anima-self-coding")["args"]]), "--runner-port 7071"),
        "runners unreachable": (without_runner_egress, "reach the runner pods"),
        "api server unreachable": (lambda b: b.remove(first(b, "NetworkPolicy", "anima-kube-api-egress")),
                                   "Kubernetes API server"),
    }
    failed = []
    baseline = check(objs, "gke")
    for e in baseline:
        failed.append(f"the manifests themselves fail: {e}")
    for what, (f, expected) in cases.items():
        broken = copy.deepcopy(objs)
        f(broken)
        errors = check(broken, "gke")
        if not any(expected in e for e in errors):
            failed.append(f"the policy does not catch: {what} (expected {expected!r}; got {errors})")
    for what in failed:
        print(f"FAIL self-test: {what}")
    if not failed:
        print(f"ok: the policy catches each of {len(cases)} broken copies by name")
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
