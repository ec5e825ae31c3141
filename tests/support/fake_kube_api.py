#!/usr/bin/env python3
"""A fake Kubernetes API server serving Agent Sandbox claims, for tests (python3 stdlib only).

What it models:
  * HTTPS on 127.0.0.1 (port 0; the port is written to --port-file when it listens) with a
    certificate for IP:127.0.0.1 chained to a CA it makes with the openssl CLI in --tls-dir (or
    reuses from there): clients verify against <tls-dir>/ca.crt.
  * Bearer-token authentication: any request without `Authorization: Bearer <--token>` gets a
    401 Status, as the API server answers an unknown or expired token.
  * extensions.agents.x-k8s.io/v1beta1 SandboxClaims in any namespace: create (POST), get, list
    (labelSelector with =, ==, != and existence terms), delete; errors as k8s Status objects
    (400 BadRequest, 401 Unauthorized, 403 Forbidden, 404 NotFound, 409 AlreadyExists,
    422 Invalid for a claim without spec.warmPoolRef.name, or with a bad name, label,
    shutdownTime or shutdownPolicy, 500 InternalError).
  * The claim controller's status: status.conditions[{type: Ready, status, reason, message,
    lastTransitionTime}] and status.sandbox{name, podIPs}; metadata gets uid,
    creationTimestamp, resourceVersion. A claim becomes Ready after --ready-delay-ms with the
    next loopback address 127.0.0.N (N from 2) as its pod IP. With --runner-cmd, every claim
    also starts that command (shell-split; {ip}, {port}, {name} substituted in each word) in a
    process group of its own and becomes Ready only once {ip}:{runner-port} accepts TCP
    connections; deleting the claim, or this server exiting, kills the group.

What it does not model: watches, resourceVersion conflicts, generateName, PUT/PATCH,
finalizers (a Foreground delete removes the claim at once, answering with it marked
deleted), lifecycle.shutdownTime expiry, warm pools and templates (any pool name is fine),
cluster-scoped lists, RBAC beyond the forbidden_namespaces knob.

Test hooks (no authentication, not recorded):
  POST /_control with a JSON object of any of:
    token: str                  the accepted bearer token from now on
    ready_delay_ms: int         how long a new claim stays not Ready
    never_ready: {reason, message} | null   claims stay Ready=False with that reason
    fail_creates: {count, status}           the next `count` creates fail with 409 or 500
    fail_gets: {count, status}              the next `count` gets of a claim fail with a 5xx
    vanish_after_ms: int | null a claim created from now on disappears that long after creation
    crd_installed: bool         false: every sandboxclaims path is 404 (Agent Sandbox missing)
    forbidden_namespaces: [str] requests there get 403 (the service account's RBAC)
    missing_namespaces: [str]   requests there get 404 (namespace not found)
    add_claim: {namespace, name, labels, age_seconds}   a Ready claim created that long ago
    reset_requests: true        forget the recorded requests
  GET /_requests: [{method, path, query, body (parsed JSON, or the text), auth (an
    Authorization header was sent), auth_ok, accept, content_type}] of the API requests so far.
  GET /_claims: every stored claim, after a status refresh.
"""

import argparse
import datetime
import http.server
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

API_VERSION = "extensions.agents.x-k8s.io/v1beta1"
CLAIM_PATH = re.compile(
    r"^/apis/extensions\.agents\.x-k8s\.io/v1beta1/namespaces/([^/]+)/sandboxclaims(?:/([^/]+))?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def now_rfc3339(seconds_ago=0):
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code, reason, message, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return code, body


def label_problem(key, value):
    """Why a label is invalid (the API server's wording, shortened), or None."""
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix))) or \
            len(name) > 63 or not LABEL_NAME.match(name):
        return f'metadata.labels: Invalid value: "{key}": name part must consist of alphanumeric ' \
               f"characters, '-', '_' or '.'"
    if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
        return f'metadata.labels: Invalid value: "{value}": a valid label must be an empty ' \
               f"string or consist of alphanumeric characters, '-', '_' or '.', and must start " \
               f"and end with an alphanumeric character (at most 63)"
    return None


def selector_matches(selector, labels):
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class Claim:
    def __init__(self, obj, ip, age_seconds=0):
        self.obj = obj
        self.ip = ip
        self.created = time.monotonic() - age_seconds
        self.process = None
        self.start_error = None  # why --runner-cmd could not be started
        self.ready = False
        self.vanish_at = None


class FakeKube:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.token = args.token
        self.runner_cmd = args.runner_cmd
        self.runner_port = args.runner_port
        self.ready_delay_ms = args.ready_delay_ms
        self.never_ready = None
        self.fail_creates = {"count": 0, "status": 500}
        self.fail_gets = {"count": 0, "status": 500}
        self.vanish_after_ms = None
        self.crd_installed = True
        self.forbidden = set()
        self.missing_namespaces = set()
        self.claims = {}  # (namespace, name) -> Claim
        self.requests = []
        self.resource_version = 0
        self.next_ip = 2

    # --- claim status, as the controller would publish it --------------------------------------

    def set_ready(self, claim, ready, reason, message):
        status = claim.obj.setdefault("status", {})
        old = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        value = "True" if ready else "False"
        if old and (old["status"], old["reason"], old["message"]) == (value, reason, message):
            return
        changed = not old or old["status"] != value
        status["conditions"] = [{
            "type": "Ready", "status": value, "reason": reason, "message": message,
            "observedGeneration": 1,
            "lastTransitionTime": now_rfc3339() if changed else old["lastTransitionTime"]}]
        status["sandbox"] = {"name": claim.obj["metadata"]["name"]}
        if ready:
            status["sandbox"]["podIPs"] = [claim.ip]
        claim.ready = ready
        self.bump(claim)

    def bump(self, claim):
        self.resource_version += 1
        claim.obj["metadata"]["resourceVersion"] = str(self.resource_version)

    def refresh(self, key):
        """Brings a claim's status up to date; False when it vanished."""
        claim = self.claims[key]
        if claim.vanish_at is not None and time.monotonic() >= claim.vanish_at:
            self.remove(key)
            return False
        if claim.ready:
            return True
        if self.never_ready is not None:
            self.set_ready(claim, False, self.never_ready.get("reason", "SandboxNotReady"),
                           self.never_ready.get("message", ""))
        elif claim.start_error is not None:
            self.set_ready(claim, False, "PodFailed", f"cannot start the runner: {claim.start_error}")
        elif (time.monotonic() - claim.created) * 1000 < self.ready_delay_ms:
            self.set_ready(claim, False, "DependenciesNotReady", "Pod is not Ready")
        elif claim.process is not None and claim.process.poll() is not None:
            self.set_ready(claim, False, "PodFailed",
                           f"runner exited with status {claim.process.returncode}")
        elif claim.process is not None and not port_open(claim.ip, self.runner_port):
            self.set_ready(claim, False, "DependenciesNotReady", "runner is not listening yet")
        else:
            self.set_ready(claim, True, "DependenciesReady", "Pod is Ready")
        return True

    def remove(self, key):
        claim = self.claims.pop(key)
        stop(claim.process)
        return claim

    def add(self, namespace, obj, age_seconds=0):
        ip = f"127.0.0.{self.next_ip}"
        self.next_ip += 1
        meta = obj["metadata"]
        meta.update({"namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                     "creationTimestamp": now_rfc3339(age_seconds)})
        claim = Claim(obj, ip, age_seconds)
        if self.runner_cmd:
            words = [w.replace("{ip}", ip).replace("{port}", str(self.runner_port))
                     .replace("{name}", meta["name"]) for w in shlex.split(self.runner_cmd)]
            try:
                claim.process = subprocess.Popen(words, start_new_session=True)
            except OSError as e:
                claim.start_error = str(e)
        if self.vanish_after_ms is not None:
            claim.vanish_at = claim.created + self.vanish_after_ms / 1000
        self.claims[(namespace, meta["name"])] = claim
        self.refresh((namespace, meta["name"]))
        return claim

    # --- the REST API ---------------------------------------------------------------------------

    def api(self, method, path, query, raw, headers):
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        auth = headers.get("Authorization")
        with self.lock:
            self.requests.append({
                "method": method, "path": path, "query": query, "body": body,
                "auth": auth is not None, "auth_ok": auth == f"Bearer {self.token}",
                "accept": headers.get("Accept"), "content_type": headers.get("Content-Type")})
            if auth != f"Bearer {self.token}":
                return status(401, "Unauthorized", "Unauthorized")
            match = CLAIM_PATH.match(path)
            if not match:
                return status(404, "NotFound", "the server could not find the requested resource")
            namespace, name = match.groups()
            if namespace in self.forbidden:
                verb = {"POST": "create", "DELETE": "delete"}.get(method, "get" if name else "list")
                return status(403, "Forbidden",
                              f'sandboxclaims.extensions.agents.x-k8s.io is forbidden: User '
                              f'"system:serviceaccount:{namespace}:anima" cannot {verb} resource '
                              f'"sandboxclaims" in API group "extensions.agents.x-k8s.io" in '
                              f'the namespace "{namespace}"',
                              {"group": "extensions.agents.x-k8s.io", "kind": "sandboxclaims"})
            if not self.crd_installed:
                return status(404, "NotFound", "the server could not find the requested resource")
            if namespace in self.missing_namespaces:
                return status(404, "NotFound", f'namespaces "{namespace}" not found',
                              {"name": namespace, "kind": "namespaces"})
            if method == "POST" and name is None:
                return self.create(namespace, body)
            if method == "GET" and name is None:
                return self.list(namespace, query.get("labelSelector", [""])[0])
            if name is None:
                return status(405, "MethodNotAllowed", f"{method} is not supported on the list")
            key = (namespace, name)
            not_found = status(404, "NotFound", f'sandboxclaims.{API_VERSION.split("/")[0]} '
                                                f'"{name}" not found',
                               {"name": name, "group": "extensions.agents.x-k8s.io",
                                "kind": "sandboxclaims"})
            if key not in self.claims or not self.refresh(key):
                return not_found
            if method == "GET" and self.fail_gets["count"] > 0:
                self.fail_gets["count"] -= 1
                return status(self.fail_gets["status"], "ServiceUnavailable",
                              "the server is currently unable to handle the request")
            if method == "GET":
                return 200, self.claims[key].obj
            if method == "DELETE":
                obj = self.remove(key).obj
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                return 200, obj
            return status(405, "MethodNotAllowed", f"{method} is not supported by this fake")

    def create(self, namespace, body):
        if not isinstance(body, dict):
            return status(400, "BadRequest", "the body of the request was not a JSON object")
        if body.get("apiVersion") != API_VERSION or body.get("kind") != "SandboxClaim":
            return status(400, "BadRequest",
                          f"expected {API_VERSION} SandboxClaim, got {body.get('apiVersion')} "
                          f"{body.get('kind')}")
        meta = body.get("metadata") or {}
        name = meta.get("name", "")
        spec = body.get("spec") or {}
        lifecycle = spec.get("lifecycle") or {}
        problems = []
        if not name:
            problems.append("metadata.name: Required value: name or generateName is required")
        elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            problems.append(f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
                            f"subdomain must consist of lower case alphanumeric characters, '-' "
                            f"or '.'")
        for key, value in (meta.get("labels") or {}).items():
            problem = label_problem(key, value)
            if problem:
                problems.append(problem)
        if not (spec.get("warmPoolRef") or {}).get("name"):
            problems.append("spec.warmPoolRef.name: Required value")
        if "shutdownTime" in lifecycle and not RFC3339.match(str(lifecycle["shutdownTime"])):
            problems.append(f'spec.lifecycle.shutdownTime: Invalid value: '
                            f'"{lifecycle["shutdownTime"]}": must be a date-time')
        if lifecycle.get("shutdownPolicy", "Retain") not in ("Delete", "DeleteForeground", "Retain"):
            problems.append(f'spec.lifecycle.shutdownPolicy: Unsupported value: '
                            f'"{lifecycle["shutdownPolicy"]}"')
        if problems:
            return status(422, "Invalid", f'SandboxClaim.extensions.agents.x-k8s.io "{name}" is '
                                          f'invalid: {", ".join(problems)}',
                          {"name": name, "kind": "SandboxClaim"})
        exists = status(409, "AlreadyExists",
                        f'sandboxclaims.extensions.agents.x-k8s.io "{name}" already exists',
                        {"name": name, "group": "extensions.agents.x-k8s.io",
                         "kind": "sandboxclaims"})
        if self.fail_creates["count"] > 0:
            self.fail_creates["count"] -= 1
            if self.fail_creates["status"] == 409:
                return exists
            return status(500, "InternalError",
                          "Internal error occurred: etcdserver: request timed out")
        if (namespace, name) in self.claims:
            return exists
        obj = {"apiVersion": API_VERSION, "kind": "SandboxClaim",
               "metadata": dict(meta), "spec": spec}
        return 201, self.add(namespace, obj).obj

    def list(self, namespace, selector):
        items = []
        for key in sorted(self.claims):
            if key[0] == namespace and self.refresh(key) and \
                    selector_matches(selector, self.claims[key].obj["metadata"].get("labels", {})):
                items.append(self.claims[key].obj)
        return 200, {"apiVersion": API_VERSION, "kind": "SandboxClaimList",
                     "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}

    # --- test hooks -------------------------------------------------------------------------------

    def control(self, changes):
        with self.lock:
            for key, value in changes.items():
                if key == "token":
                    self.token = value
                elif key == "ready_delay_ms":
                    self.ready_delay_ms = int(value)
                elif key == "never_ready":
                    self.never_ready = value
                elif key in ("fail_creates", "fail_gets"):
                    setattr(self, key, {"count": int(value.get("count", 1)),
                                        "status": int(value.get("status", 500))})
                elif key == "vanish_after_ms":
                    self.vanish_after_ms = value
                elif key == "crd_installed":
                    self.crd_installed = bool(value)
                elif key == "forbidden_namespaces":
                    self.forbidden = set(value)
                elif key == "missing_namespaces":
                    self.missing_namespaces = set(value)
                elif key == "add_claim":
                    obj = {"apiVersion": API_VERSION, "kind": "SandboxClaim",
                           "metadata": {"name": value["name"], "labels": value.get("labels", {})},
                           "spec": {"warmPoolRef": {"name": "seeded"}}}
                    self.add(value.get("namespace", "default"), obj,
                             int(value.get("age_seconds", 0)))
                elif key == "reset_requests":
                    self.requests = []
                else:
                    return status(400, "BadRequest", f"unknown control key {key}")
        return 200, {"ok": True}

    def all_claims(self):
        with self.lock:
            return 200, [self.claims[k].obj for k in sorted(self.claims) if self.refresh(k)]

    def stop_all(self):
        with self.lock:
            for key in list(self.claims):
                self.remove(key)


def port_open(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


def stop(process):
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def make_tls(directory):
    """A CA and a server certificate for 127.0.0.1 in `directory`, unless already there."""
    files = [os.path.join(directory, f) for f in ("ca.crt", "server.crt", "server.key")]
    if all(os.path.exists(f) for f in files):
        return files
    os.makedirs(directory, exist_ok=True)

    def path(name):
        return os.path.join(directory, name)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", path("ca.key"), "-out", path("ca.tmp"), "-days", "2",
            "-subj", "/CN=fake-kube-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", path("server.key"), "-out", path("server.csr"),
            "-subj", "/CN=kube-apiserver")
    with open(path("server.ext"), "w") as ext:
        ext.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                  "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", path("server.csr"), "-CA", path("ca.tmp"), "-CAkey",
            path("ca.key"), "-CAcreateserial", "-out", path("server.crt"), "-days", "2",
            "-extfile", path("server.ext"))
    os.replace(path("ca.tmp"), path("ca.crt"))  # last: its presence means the set is complete
    return files


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake, context):
        super().__init__(("127.0.0.1", 0), Handler)
        self.fake = fake
        self.context = context

    def finish_request(self, request, client_address):
        # TLS in the connection's thread, so a client failing the handshake (a CA that does not
        # match) costs only its own thread.
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def dispatch(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        fake = self.server.fake
        if url.path == "/_control" and method == "POST":
            code, body = fake.control(json.loads(raw or b"{}"))
        elif url.path == "/_requests" and method == "GET":
            with fake.lock:
                code, body = 200, list(fake.requests)
        elif url.path == "/_claims" and method == "GET":
            code, body = fake.all_claims()
        else:
            code, body = fake.api(method, url.path, urllib.parse.parse_qs(url.query), raw,
                                  self.headers)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tls-dir", required=True, help="where ca.crt and the server's key live")
    parser.add_argument("--tls-only", action="store_true", help="make the TLS files and exit")
    parser.add_argument("--port-file", help="written with the port once listening")
    parser.add_argument("--token", default="", help="the bearer token accepted")
    parser.add_argument("--ready-delay-ms", type=int, default=0)
    parser.add_argument("--runner-cmd", default="", help="started per claim: {ip} {port} {name}")
    parser.add_argument("--runner-port", type=int, default=7070)
    args = parser.parse_args()
    _, cert, key = make_tls(args.tls_dir)
    if args.tls_only:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake = FakeKube(args)
    server = Server(fake, context)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.port_file:
            with open(args.port_file + ".tmp", "w") as f:
                f.write(str(server.server_address[1]))
            os.replace(args.port_file + ".tmp", args.port_file)
        print(f"fake kube-apiserver listening on https://127.0.0.1:{server.server_address[1]}",
              flush=True)
        server.serve_forever()
    finally:
        fake.stop_all()


if __name__ == "__main__":
    main()
