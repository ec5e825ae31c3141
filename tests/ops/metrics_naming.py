#!/usr/bin/env python3
"""Checks Prometheus text expositions against the naming convention of DESIGN.md §2 and
docs/metrics.md: anima_<part>_<what>_<unit> (or process_*), counters and only counters end in
_total, base units, histograms name their unit, and every family is documented.

  metrics_naming.py DOCS FILE...   one FILE per service (its name is the file's stem)
  metrics_naming.py --self-test    each rule catches a family broken for it"""
import pathlib
import re
import sys


# The parts of anima_<part>_...: one per service, grpc for the RPC metrics every service shares,
# store for the shared-state clients (Redis, PostgreSQL) of whichever service uses them.
PARTS = ("gateway", "router", "broker", "selfcoding", "sim", "grpc", "store")


def check(doc_text, expositions):
    documented = set(re.findall(r"`([a-z_:]+)`", doc_text))
    bad = []
    for service, text in expositions.items():
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
            where = f"{service}: {name} ({kind})"
            if name.startswith("exposer_"):  # prometheus-cpp's own, fixed by the library
                continue
            if not re.fullmatch(r"(anima_[a-z]+|process)(_[a-z0-9]+)+", name):
                bad.append(f"{where}: not anima_<part>_<what>[_<unit>] in snake case")
            elif name.startswith("anima_") and name.split("_")[1] not in PARTS:
                bad.append(f"{where}: the part is not one of {', '.join(PARTS)}")
            if (kind == "counter") != name.endswith("_total"):
                bad.append(f"{where}: counters, and only counters, end in _total")
            if re.search(r"_(ms|milliseconds|us|microseconds|minutes|hours|kb|kib|mb|mib|percent)(_|$)", name):
                bad.append(f"{where}: not in base units (seconds, bytes, ratios 0..1)")
            if kind == "histogram" and not re.search(r"_(seconds|bytes)$", name):
                bad.append(f"{where}: a histogram names its unit")
            if name not in documented:
                bad.append(f"{where}: not in docs/metrics.md")
    return bad


def self_test():
    doc = ("`anima_store_good_total` `anima_store_latency_ms` `anima_store_requests` "
           "`anima_store_wait` `Anima_Bad_total` `anima_nopart_calls_total`")
    cases = {
        "anima_store_latency_ms gauge": "base units",
        "anima_store_requests counter": "_total",
        "anima_store_good_total gauge": "_total",
        "anima_store_wait histogram": "names its unit",
        "Anima_Bad_total counter": "snake case",
        "anima_store_undocumented_total counter": "not in docs",
        "anima_nopart_calls_total counter": "the part",
    }
    failed = []
    if check(doc, {"ok": "# TYPE anima_store_good_total counter\n"}):
        failed.append("a good family is refused")
    for family, expected in cases.items():
        errors = check(doc, {"svc": f"# TYPE {family}\n"})
        if not any(expected in e for e in errors):
            failed.append(f"{family}: expected an error about {expected!r}, got {errors}")
    for f in failed:
        print("FAIL self-test:", f)
    if not failed:
        print(f"ok: the naming check catches each of {len(cases)} broken families")
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    doc = pathlib.Path(sys.argv[1]).read_text()
    expositions = {pathlib.Path(p).stem: pathlib.Path(p).read_text() for p in sys.argv[2:]}
    bad = check(doc, expositions)
    for b in bad:
        print("FAIL:", b)
    if not bad:
        print("ok: every family follows the naming convention and is documented")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
