#!/usr/bin/env python3
"""The PromQL of every Grafana dashboard and every Prometheus rule, and checks against a live
Prometheus that each returns data.

  promql_queries.py list                       print every query (source, expression)
  promql_queries.py check PROM_URL TIMEOUT_S   retry until every query returns data or time runs out

Dashboard variables are replaced by `.*` (every filter on a variable is a regex match),
$__rate_interval by 1m. An alert expression is checked without its threshold (`x > 0.05` runs
`x`), `absent(x)` runs `x`: the point is that the series the rule watches exist.

A query may stay empty only when a metric it uses is in PENDING and no service exports it yet
(metrics that other changes are adding); it is reported, and checked as soon as it exists."""
import json
import pathlib
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy/grafana/dashboards"
RULES = ROOT / "deploy/prometheus/rules.yml"

PENDING: set = set()

COMPARISON = re.compile(r"^(.*?)\s*(>=|<=|==|!=|>|<)\s*-?[0-9.]+(e[-+]?[0-9]+)?\s*$", re.S)
METRIC = re.compile(r"\b(anima_[a-z_]+|process_[a-z_]+|up)\b(?=\s*[{\[)]|\s*$)")


def substitute(expr):
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    expr = expr.replace("$__interval", "15s")
    return re.sub(r"\$\{?[a-zA-Z_]+\}?", ".*", expr)


def strip_threshold(expr):
    parts = []
    for part in re.split(r"\s+and\s+", expr.strip()):
        m = COMPARISON.match(part.strip())
        part = m.group(1) if m else part.strip()
        a = re.match(r"^absent\((.*)\)$", part, re.S)
        if a:
            part = a.group(1)
            m = COMPARISON.match(part.strip())
            part = m.group(1) if m else part
        parts.append(part)
    return parts


def queries():
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']}", substitute(t["expr"])))
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.match(r"^label_values\((.*),\s*(\w+)\)$", var["query"]["query"])
            if not m:
                raise SystemExit(f"{path.name}: variable {var['name']}: not label_values(...)")
            out.append((f"{path.name}: variable ${var['name']}", substitute(m.group(1))))
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                out.append((f"rules.yml: {rule['record']}", rule["expr"].strip()))
            else:
                for part in strip_threshold(rule["expr"]):
                    out.append((f"rules.yml: alert {rule['alert']}", part))
    return out


def query(url, expr):
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/query", data, timeout=5) as r:
        body = json.load(r)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def exported(url, name):
    return bool(query(url, f'count({{__name__="{name}"}})'))


def check(url, timeout_s):
    qs = queries()
    deadline = time.monotonic() + timeout_s
    while True:
        empty, pending = [], []
        for source, expr in qs:
            try:
                result = query(url, expr)
            except Exception as e:  # a bad query is a failure at once, not something to wait out
                print(f"FAIL {source}: {expr}\n  {e}")
                return 1
            if result:
                continue
            names = set(METRIC.findall(expr)) | set(re.findall(r"\b(anima_[a-z_]+)", expr))
            missing = {n for n in names if n in PENDING and not exported(url, n)}
            (pending if missing else empty).append((source, expr, missing))
        if not empty:
            break
        if time.monotonic() > deadline:
            for source, expr, _ in empty:
                print(f"FAIL no data: {source}\n  {expr}")
            return 1
        time.sleep(1)
    for name in sorted(PENDING):
        if exported(url, name):
            print(f"note: {name} is exported now: remove it from PENDING in {pathlib.Path(__file__).name}")
    for source, expr, missing in pending:
        print(f"PENDING {source}: {', '.join(sorted(missing))} not exported yet")
    print(f"ok: {len(qs) - len(pending)} of {len(qs)} queries return data"
          f" ({len(pending)} wait for pending metrics)")
    return 0


def self_test():
    cases = {
        'up{job=~"anima-.*"} == 0': ['up{job=~"anima-.*"}'],
        'absent(up{job="anima-gateway"} == 1)': ['up{job="anima-gateway"}'],
        "count(x) > 0 and min(x) > 0": ["count(x)", "min(x)"],
        "a:ratio > 0.05": ["a:ratio"],
        "histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 1e-3": [
            "histogram_quantile(0.99, sum by (le) (rate(h[5m])))"],
    }
    failed = [f"{e!r} -> {strip_threshold(e)!r}, not {w!r}"
              for e, w in cases.items() if strip_threshold(e) != w]
    sub = substitute('rate(x{job=~"$job", p=~"${provider}"}[$__rate_interval])')
    if sub != 'rate(x{job=~".*", p=~".*"}[1m])':
        failed.append(f"substitute: {sub}")
    if len(queries()) < 50:
        failed.append(f"only {len(queries())} queries found in the dashboards and rules")
    for f in failed:
        print("FAIL self-test:", f)
    if not failed:
        print(f"ok: {len(queries())} queries extracted from the dashboards and rules")
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if len(sys.argv) >= 2 and sys.argv[1] == "list":
        for source, expr in queries():
            print(f"{source}\n  {expr}")
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        return check(sys.argv[2].rstrip("/"), float(sys.argv[3]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
