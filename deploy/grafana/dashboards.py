#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (run it after editing; the ops test checks that
the committed JSON is what this produces: `dashboards.py --check`).

Every query uses a $datasource variable and label filters on variables matched with =~, so the
test can substitute `.*` for each variable and run the query against a live Prometheus."""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
# Health checks, state polls and reflection are not traffic.
RPC = 'service!~"grpc[.].*|anima[.]v1[.]Introspection"'
SERVER_ERR = 'code=~"UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS"'
RI = "$__rate_interval"


class Board:
    def __init__(self, uid, title, description, variables):
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0

    def row(self, title):
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def panel(self, kind, title, targets, unit="short", w=8, h=8, description="", **extra):
        if self.x + w > 24:
            self._newline()
        p = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                 "legendFormat": legend, "range": True}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "timeseries":
            p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                       "calcs": ["lastNotNull", "max"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        for k, v in extra.items():
            if k == "defaults":
                p["fieldConfig"]["defaults"].update(v)
            else:
                p[k] = v
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        templating = [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
        }]
        for name, label, query in self.variables:
            templating.append({
                "name": name, "label": label, "type": "query", "datasource": DS,
                "query": {"query": query, "refId": "vars"}, "definition": query,
                "includeAll": True, "allValue": ".*", "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "refresh": 2, "sort": 1, "hide": 0,
            })
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["anima"],
            "timezone": "utc",
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "schemaVersion": 38,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": templating},
            "annotations": {"list": []},
            "links": [{"title": "Anima dashboards", "type": "dashboards", "tags": ["anima"],
                       "asDropdown": True}],
            "panels": self.panels,
        }


def quantiles(metric, by, sel, qs=(0.5, 0.99), legend=""):
    out = []
    for q in qs:
        out.append((f"histogram_quantile({q}, sum by ({by + ', ' if by else ''}le) "
                    f"(rate({metric}_bucket{{{sel}}}[{RI}])))",
                    f"p{int(q * 100)} {legend}".strip()))
    return out


HARMONY_STEPS = {"mode": "absolute", "steps": [
    {"color": "red", "value": None}, {"color": "orange", "value": 0.5},
    {"color": "green", "value": 0.9}]}
BREAKER_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "closed", "color": "green"},
    "1": {"text": "open", "color": "red"},
    "2": {"text": "half-open", "color": "orange"}}}]


UP_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red"},
    "1": {"text": "up", "color": "green"}}}]


def shared_state(b):
    """Redis (gateway quotas, router memory) and PostgreSQL (self-coding jobs): the anima_store_*
    metrics of every process with --redis / --postgres, and what the services do while those do
    not answer. Empty where no service runs with a shared backend (plain `tools/anima up`)."""
    sel = 'job=~"$job"'
    b.row("Shared state (Redis, PostgreSQL)")
    b.panel("stat", "Store up", [
        (f"min by (job, backend) (anima_store_up{{{sel}}})", "{{job}} {{backend}}"),
        (f"min by (job) (anima_gateway_quota_backend_up{{{sel}}})", "{{job}} quotas shared")],
        w=6, description="Per service and backend, 0 while any of its replicas has no working "
        "connection (min over replicas). \"quotas shared\" is 0 while a gateway decides quotas "
        "with its local fallback. Empty without --redis / --postgres.",
        defaults={"mappings": UP_MAPPINGS, "thresholds": {"mode": "absolute", "steps": [
            {"color": "red", "value": None}, {"color": "green", "value": 1}]}})
    b.panel("timeseries", "Store calls by backend, op and result", [
        (f"sum by (backend, op, result) (rate(anima_store_calls_total{{{sel}}}[{RI}]))",
         "{{backend}} {{op}} {{result}}")], unit="reqps", w=9,
        description="Calls to Redis and PostgreSQL. error: refused at once (not connected, "
        "client queue full), a lost connection or an error reply; timeout: no answer within "
        "the call timeout.")
    b.panel("timeseries", "Store call latency p99", quantiles(
        "anima_store_call_seconds", "backend, op", sel, qs=(0.99,), legend="{{backend}} {{op}}"),
        unit="s", w=9, description="From a call to its answer or failure, queueing in the client "
        "included. AnimaStoreSlow fires over 50 ms (Redis) or 250 ms (PostgreSQL) for 10 minutes.")
    b.panel("timeseries", "Quota checks on the local fallback", [
        (f"sum by (job, reason) (rate(anima_gateway_quota_fallback_total{{{sel}}}[{RI}]))",
         "{{job}} {{reason}}")], unit="reqps", w=12,
        description="Quota admissions a gateway decided alone because Redis did not answer "
        "(fail open to the local limits): while this is above 0 a principal may get up to N "
        "times its limits over N gateways (docs/security.md, Quotas across replicas).")
    b.panel("timeseries", "Conversation memory skipped", [
        (f"sum by (job, op) (rate(anima_router_memory_unavailable_total{{{sel}}}[{RI}]))",
         "{{job}} {{op}}")], unit="reqps", w=12,
        description="Conversation memory the router could not read (history: the chat was "
        "answered without its earlier turns) or write (append: the turn is not remembered) "
        "because its store did not answer.")


def overview():
    b = Board("anima-overview", "Anima / Overview",
              "Harmony, module health, RED (rate, errors, duration) for every service and the "
              "shared-state backends (Redis, PostgreSQL).",
              [("job", "Service", 'label_values(up{job=~"anima-.*"}, job)')])
    b.row("System")
    b.panel("stat", "Harmony", [("min(anima_router_harmony)", "harmony")], unit="percentunit",
            w=6, h=6, description="Mean module health from the router (healthy 1, degraded 0.5, "
            "down 0): healthy at 0.9 and above, critical under 0.5.",
            defaults={"min": 0, "max": 1, "thresholds": HARMONY_STEPS, "decimals": 2})
    b.panel("timeseries", "Modules by status", [
        ("sum by (status) (anima_router_modules)", "{{status}}")], w=6, h=6,
        description="Modules of consciousness_state (services, providers, queues, job store).")
    b.panel("stat", "Targets up", [
        ('sum by (job) (up{job=~"$job"})', "{{job}}")], w=6, h=6,
        description="Scraped instances answering, per service.",
        defaults={"thresholds": {"mode": "absolute", "steps": [
            {"color": "red", "value": None}, {"color": "green", "value": 1}]}})
    b.panel("timeseries", "Harmony over time", [
        ("min(anima_router_harmony)", "harmony")], unit="percentunit", w=6, h=6,
        defaults={"min": 0, "max": 1})
    b.row("Client requests (router)")
    b.panel("timeseries", "Requests by type", [
        (f"sum by (type) (rate(anima_router_requests_total[{RI}]))", "{{type}}")], unit="reqps")
    b.panel("timeseries", "Requests by outcome", [
        (f"sum by (outcome) (rate(anima_router_requests_total[{RI}]))", "{{outcome}}")],
        unit="reqps", description="ok, or the error code the client received.")
    b.panel("timeseries", "Gateway latency by type", quantiles(
        "anima_gateway_request_seconds", "type", 'type!~"self_coding.*"', legend="{{type}}"),
        unit="s", description="From frame received to terminal frame sent; self-coding jobs, "
        "which last minutes, are on the router dashboard.")
    b.row("RED per service (gRPC servers)")
    b.panel("timeseries", "Rate", [
        (f'sum by (job) (rate(anima_grpc_server_handled_total{{job=~"$job", {RPC}}}[{RI}]))',
         "{{job}}")], unit="reqps")
    b.panel("timeseries", "Error ratio", [
        (f'(sum by (job) (rate(anima_grpc_server_handled_total{{job=~"$job", {RPC}, {SERVER_ERR}}}[{RI}]))'
         f' or sum by (job) (rate(anima_grpc_server_handled_total{{job=~"$job", {RPC}}}[{RI}])) * 0)'
         f' / sum by (job) (rate(anima_grpc_server_handled_total{{job=~"$job", {RPC}}}[{RI}]))',
         "{{job}}")], unit="percentunit", description="Server-side failures only.")
    b.panel("timeseries", "Duration p99", quantiles(
        "anima_grpc_server_handling_seconds", "job", f'job=~"$job", {RPC}', qs=(0.99,),
        legend="{{job}}"), unit="s")
    shared_state(b)
    b.row("Resources")
    b.panel("timeseries", "CPU", [
        (f'sum by (job) (rate(process_cpu_seconds_total{{job=~"$job"}}[{RI}]))', "{{job}}")],
        unit="percentunit", description="Cores used (1 = one core).")
    b.panel("timeseries", "Memory (RSS)", [
        ('sum by (job) (process_resident_memory_bytes{job=~"$job"})', "{{job}}")], unit="bytes")
    b.panel("timeseries", "Open file descriptors", [
        ('sum by (job) (process_open_fds{job=~"$job"})', "{{job}}")])
    return b


def gateway():
    sel = 'job="anima-gateway", instance=~"$instance"'
    b = Board("anima-gateway", "Anima / Gateway",
              "WebSocket connections, frames in and out, limits and latency at the edge.",
              [("instance", "Instance", 'label_values(up{job="anima-gateway"}, instance)')])
    b.row("Connections")
    b.panel("stat", "Open connections", [(f"sum(anima_gateway_connections{{{sel}}})", "open")],
            w=6, h=6)
    b.panel("timeseries", "Open connections per instance", [
        (f"sum by (instance) (anima_gateway_connections{{{sel}}})", "{{instance}}")], w=9, h=6)
    b.panel("timeseries", "Connections accepted", [
        (f"sum by (instance) (rate(anima_gateway_connections_total{{{sel}}}[{RI}]))",
         "{{instance}}")], unit="cps", w=9, h=6)
    b.row("Frames")
    b.panel("timeseries", "Frames received by type and outcome", [
        (f"sum by (type, outcome) (rate(anima_gateway_frames_received_total{{{sel}}}[{RI}]))",
         "{{type}} {{outcome}}")], unit="reqps", w=12)
    b.panel("timeseries", "Frames sent by type", [
        (f"sum by (type) (rate(anima_gateway_frames_sent_total{{{sel}}}[{RI}]))", "{{type}}")],
        unit="reqps", w=12)
    b.panel("timeseries", "Error frames by code", [
        (f"sum by (code) (rate(anima_gateway_errors_total{{{sel}}}[{RI}]))", "{{code}}")],
        unit="reqps")
    b.panel("timeseries", "Limit hits", [
        (f"sum by (limit) (rate(anima_gateway_limit_hits_total{{{sel}}}[{RI}]))", "{{limit}}")],
        unit="reqps", description="Limits refusing or closing something: message size and rate, "
        "requests in flight, send queue, idle and handshake timeouts, connection count and rate.")
    b.panel("timeseries", "Request latency", quantiles(
        "anima_gateway_request_seconds", "type", f'{sel}, type!~"self_coding.*"',
        legend="{{type}}"), unit="s")
    b.row("Admission (every type held to its own limit; overload refused at the door)")
    b.panel("timeseries", "Admission limit by type", [
        (f"max by (type) (anima_gateway_admission_limit{{{sel}}})", "{{type}}")],
        description="Adaptive concurrency limit per type: it shrinks when the type's round trip "
        "rises over twice its baseline (CPU contention) and grows when it does not.")
    b.panel("timeseries", "Refused by admission", [
        (f"sum by (type, reason) (rate(anima_gateway_admission_refused_total{{{sel}}}[{RI}]))",
         "{{type}} {{reason}}")],
        unit="reqps",
        description="Requests answered overloaded before reaching the router: standing_queue (the "
        "type's oldest held request had waited past the target), max_wait (held too long).")
    b.panel("timeseries", "Sessions waiting for admission", [
        (f"sum by (type) (anima_gateway_admission_waiting_sessions{{{sel}}})", "{{type}}")])
    b.panel("timeseries", "Admission wait", quantiles(
        "anima_gateway_admission_wait_seconds", "priority", sel, legend="{{priority}}"), unit="s")
    b.row("Tenants: spend and refusals")
    b.panel("timeseries", "Spend by tier (USD per hour)", [
        (f"sum by (tier) (rate(anima_gateway_cost_usd_total{{{sel}}}[{RI}])) * 3600", "{{tier}}")],
        unit="currencyUSD",
        description="Dollars charged to principals' budgets, from the broker's price table: every "
        "provider call of their answers (fanout candidates included).")
    b.panel("timeseries", "Tokens charged by tier", [
        (f"sum by (tier) (rate(anima_gateway_tokens_charged_total{{{sel}}}[{RI}]))", "{{tier}}")],
        unit="short")
    b.panel("timeseries", "Quota refusals by limit", [
        (f"sum by (tier, limit) (rate(anima_gateway_quota_refusals_total{{{sel}}}[{RI}]))",
         "{{tier}} {{limit}}"),
        (f"sum by (reason) (rate(anima_gateway_auth_failures_total{{{sel}}}[{RI}]))",
         "auth: {{reason}}")],
        unit="reqps",
        description="Requests refused by a principal's quota (quota_exceeded, HTTP 429), and "
        "requests refused before auth (missing or invalid token, origin, throttled address).")
    b.panel("timeseries", "Spend by principal (bounded keys files only)", [
        (f"topk(10, sum by (principal) (rate(anima_gateway_principal_cost_usd_total{{{sel}}}[{RI}])) * 3600)",
         "{{principal}}")],
        unit="currencyUSD", w=24,
        description="Only when the keys file bounds the principals (docs/metrics.md, Cardinality); "
        "otherwise empty: ask GET /v1/usage for one principal.")
    b.row("Router calls and resources")
    b.panel("timeseries", "Router calls by code", [
        (f"sum by (code) (rate(anima_grpc_client_handled_total{{{sel}}}[{RI}]))", "{{code}}")],
        unit="reqps")
    b.panel("timeseries", "Memory per open connection", [
        (f"sum(process_resident_memory_bytes{{{sel}}}) / clamp_min(sum(anima_gateway_connections{{{sel}}}), 1)",
         "bytes per connection")], unit="bytes")
    b.panel("timeseries", "CPU", [
        (f"sum by (instance) (rate(process_cpu_seconds_total{{{sel}}}[{RI}]))", "{{instance}}")],
        unit="percentunit")
    return b


def providers():
    sel = 'job="anima-llm-broker", provider=~"$provider"'
    b = Board("anima-providers", "Anima / Providers",
              "Every provider call the broker makes: rate, errors, latency, tokens, cost, "
              "circuit breakers, and the broker's own overhead.",
              [("provider", "Provider",
                'label_values(anima_broker_provider_requests_total, provider)')])
    b.row("Requests")
    b.panel("timeseries", "Requests by provider and outcome", [
        (f"sum by (provider, outcome) (rate(anima_broker_provider_requests_total{{{sel}}}[{RI}]))",
         "{{provider}} {{outcome}}")], unit="reqps")
    b.panel("timeseries", "Error ratio by provider", [
        (f'(sum by (provider) (rate(anima_broker_provider_requests_total{{{sel}, outcome!="ok"}}[{RI}]))'
         f" or sum by (provider) (rate(anima_broker_provider_requests_total{{{sel}}}[{RI}])) * 0)"
         f" / sum by (provider) (rate(anima_broker_provider_requests_total{{{sel}}}[{RI}]))",
         "{{provider}}")], unit="percentunit")
    b.panel("timeseries", "Latency by provider", quantiles(
        "anima_broker_provider_request_seconds", "provider", sel, legend="{{provider}}"),
        unit="s")
    b.row("Tokens and cost")
    b.panel("timeseries", "Tokens by provider and kind", [
        (f"sum by (provider, kind) (rate(anima_broker_tokens_total{{{sel}}}[{RI}]))",
         "{{provider}} {{kind}}")], unit="short", description="Tokens per second.")
    b.panel("timeseries", "Tokens by model", [
        (f"sum by (model) (rate(anima_broker_tokens_total{{{sel}}}[{RI}]))", "{{model}}")])
    b.panel("timeseries", "Cost per hour", [
        (f"sum by (provider, model) (rate(anima_broker_cost_usd_total{{{sel}}}[{RI}])) * 3600",
         "{{provider}} {{model}}")], unit="currencyUSD",
        description="Spend rate in US dollars per hour, from the prices in the broker config.")
    b.panel("stat", "Cost over the time range", [
        (f"sum by (provider) (increase(anima_broker_cost_usd_total{{{sel}}}[$__range]))",
         "{{provider}}")], unit="currencyUSD", w=8, h=6)
    b.row("Resilience")
    b.panel("state-timeline", "Circuit breakers", [
        (f"max by (provider) (anima_broker_breaker_state{{{sel}}})", "{{provider}}")],
        w=16, h=6, defaults={"mappings": BREAKER_MAPPINGS, "thresholds": {"mode": "absolute",
        "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}},
        description="0 closed, 1 open (no traffic), 2 half-open (probing after a pause).")
    b.panel("timeseries", "Broker overhead", quantiles(
        "anima_broker_overhead_seconds", "", 'job="anima-llm-broker"'), unit="s",
        description="Time in the broker minus time waiting on providers.")
    b.panel("timeseries", "Broker RPCs by method and code", [
        (f'sum by (method, code) (rate(anima_grpc_server_handled_total{{job="anima-llm-broker", {RPC}}}[{RI}]))',
         "{{method}} {{code}}")], unit="reqps")
    b.panel("timeseries", "New provider connections", [
        (f'sum by (origin) (rate(anima_broker_http_connections_opened_total{{job="anima-llm-broker"}}[{RI}]))',
         "{{origin}}")], unit="cps", description="High while traffic is steady: keep-alive is not "
        "working (proxy or provider closing connections).")
    b.panel("timeseries", "Simulator requests (local and test runs)", [
        (f'sum by (scenario, status) (rate(anima_sim_requests_total{{job="anima-llm-sim"}}[{RI}]))',
         "{{scenario}} {{status}}")], unit="reqps")
    return b


def router():
    b = Board("anima-router", "Anima / Router and self-coding",
              "Admission queues by priority, routing outcomes, downstream calls, and the "
              "self-coding jobs with their stages.",
              [("priority", "Priority", "label_values(anima_router_queue_depth, priority)")])
    psel = 'job="anima-router", priority=~"$priority"'
    b.row("Queues and priorities")
    b.panel("timeseries", "Queue depth", [
        (f"sum by (priority) (anima_router_queue_depth{{{psel}}})", "{{priority}}")])
    b.panel("timeseries", "Queue wait", quantiles(
        "anima_router_queue_wait_seconds", "priority", psel, legend="{{priority}}"), unit="s")
    b.panel("timeseries", "Rejected (overloaded)", [
        (f"sum by (priority) (rate(anima_router_rejected_total{{{psel}}}[{RI}]))",
         "{{priority}}")], unit="reqps")
    b.panel("timeseries", "In flight", [
        ('sum(anima_router_in_flight{job="anima-router"})', "in flight")])
    b.panel("timeseries", "Requests by type and outcome", [
        (f'sum by (type, outcome) (rate(anima_router_requests_total{{job="anima-router"}}[{RI}]))',
         "{{type}} {{outcome}}")], unit="reqps")
    b.panel("timeseries", "Latency by type", quantiles(
        "anima_router_request_seconds", "type", 'job="anima-router", type!~"self_coding.*"',
        legend="{{type}}"), unit="s")
    b.panel("timeseries", "Downstream calls by service and code", [
        (f'sum by (service, code) (rate(anima_grpc_client_handled_total{{job="anima-router", {RPC}}}[{RI}]))',
         "{{service}} {{code}}")], unit="reqps")
    b.panel("timeseries", "Conversations remembered", [
        ('sum(anima_router_conversations{job="anima-router"})', "conversations")])
    b.panel("timeseries", "Harmony and modules", [
        ("min(anima_router_harmony)", "harmony"),
        ("sum by (status) (anima_router_modules)", "modules {{status}}")])
    b.row("Self-coding")
    ssel = 'job="anima-self-coding"'
    b.panel("timeseries", "Jobs ended by status", [
        (f"sum by (status) (increase(anima_selfcoding_jobs_total{{{ssel}}}[{RI}]))", "{{status}}")],
        description="Jobs that ended in each interval.")
    b.panel("timeseries", "Running and queued jobs", [
        (f"sum(anima_selfcoding_running_jobs{{{ssel}}})", "running"),
        (f"sum(anima_selfcoding_queue_depth{{{ssel}}})", "queued")])
    b.panel("timeseries", "Failed share (30 m)", [
        (f'sum(rate(anima_selfcoding_jobs_total{{{ssel}, status="failed"}}[30m])) / '
         f'sum(rate(anima_selfcoding_jobs_total{{{ssel}, status=~"succeeded|failed"}}[30m]))',
         "failed")], unit="percentunit")
    b.panel("timeseries", "Stage duration", quantiles(
        "anima_selfcoding_stage_seconds", "stage", ssel, legend="{{stage}}"), unit="s", w=12)
    b.panel("timeseries", "Stages run", [
        (f"sum by (stage) (rate(anima_selfcoding_stage_seconds_count{{{ssel}}}[{RI}]))",
         "{{stage}}")], unit="ops", w=12)
    return b


def main():
    boards = [overview(), gateway(), providers(), router()]
    check = "--check" in sys.argv[1:]
    stale = []
    for b in boards:
        path = OUT / f"{b.uid}.json"
        text = json.dumps(b.json(), indent=2) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale dashboards (run deploy/grafana/dashboards.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
