#!/usr/bin/env python3
"""Builds the BENCHMARKS.md tables from one run of benches/run.sh.

usage: summarize.py TARGET_DIR OUT_DIR
Reads TARGET_DIR/criterion/**/new/estimates.json (medians), OUT_DIR/criterion.log (LATENCY
lines), the churn bench's second run on huge pages (TARGET_DIR/criterion-hugetlb,
OUT_DIR/churn-hugetlb.log), OUT_DIR/memory.txt and OUT_DIR/loadgen.txt, and prints markdown.
"""
import json
import os
import re
import sys

target, out = sys.argv[1], sys.argv[2]
crit = os.path.join(target, "criterion")


def median_ns(group, contender, param, crit=crit):
    path = os.path.join(crit, group, contender, str(param), "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def rate(elements, ns):
    return elements / ns * 1e9 if ns else None


def fmt_rate(r):
    if r is None:
        return "n/a"
    if r >= 1e6:
        return f"{r / 1e6:.2f} M/s"
    return f"{r / 1e3:.0f} k/s"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"


print("### Fan-out to one user (deliveries per second, median of 10 samples)\n")
print("| connections | sse-hub | bare broadcast (limit) | replaced | sse-hub / limit | sse-hub / replaced |")
print("|---:|---:|---:|---:|---:|---:|")
for n in [1, 100, 1000, 10000]:
    r = {c: rate(n * 64, median_ns("fanout", c, n)) for c in ["sse-hub", "bare-broadcast", "replaced"]}
    print(f"| {n:,} | {fmt_rate(r['sse-hub'])} | {fmt_rate(r['bare-broadcast'])} | {fmt_rate(r['replaced'])} "
          f"| {ratio(r['sse-hub'], r['bare-broadcast'])} | {ratio(r['sse-hub'], r['replaced'])} |")

def churn_latencies(log):
    latency = {}
    try:
        with open(os.path.join(out, log)) as f:
            for line in f:
                m = re.match(r"LATENCY churn/(\S+)/(\S+): (.*)", line.strip())
                if m and "samples=0 " not in m.group(3):
                    latency[(m.group(1), m.group(2))] = dict(kv.split("=") for kv in m.group(3).split())
    except OSError:
        pass
    return latency


def churn_table(log, crit, contenders):
    latency = churn_latencies(log)
    print("| publishes to | contender | publishes/s (median) | p50 | p99 | p99.9 | churn ops/s | sse-hub / replaced |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for seq in ["one-user", "random-user"]:
        hub = rate(1, median_ns("churn", "sse-hub", seq, crit))
        old = rate(1, median_ns("churn", "replaced", seq, crit))
        for c in contenders:
            r = rate(1, median_ns("churn", c, seq, crit))
            lat = latency.get((c, seq), {})
            us = lambda k: f"{int(lat[k]) / 1000:.2f} µs" if k in lat else "n/a"
            churn = f"{float(lat['churn_ops_per_sec']):,.0f}" if "churn_ops_per_sec" in lat else "n/a"
            rel = ratio(hub, old) if c == "sse-hub" else ""
            print(f"| {seq} | {c} | {fmt_rate(r)} | {us('p50_ns')} | {us('p99_ns')} | {us('p999_ns')} | {churn} | {rel} |")


print("\n### Publish to one of 100 000 users under connect/disconnect churn\n")
churn_table("criterion.log", crit, ["sse-hub", "sse-hub-steady", "bare-broadcast", "replaced"])

print("\n### The same, with glibc's heap on transparent huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`)\n")
churn_table("churn-hugetlb.log", os.path.join(target, "criterion-hugetlb"), ["sse-hub", "sse-hub-steady"])

print("\n### Router: one AG-UI event to the AG-UI and context channels\n")
print("| contender | time per event (median) | events/s | sse-hub / contender |")
print("|---|---:|---:|---:|")
hub = median_ns("router_agui", "sse-hub", "agui+context")
for c in ["sse-hub", "bare-broadcast", "replaced"]:
    ns = median_ns("router_agui", c, "agui+context")
    t = f"{ns:.0f} ns" if ns else "n/a"
    print(f"| {c} | {t} | {fmt_rate(rate(1, ns))} | {ratio(ns, hub) if c != 'sse-hub' else ''} |")

print("\n### Resume of 1 000 missed events\n")
print("| contender | time per resume (median) | events/s |")
print("|---|---:|---:|")
for c in ["sse-hub", "bare-broadcast"]:
    ns = median_ns("resume", c, 1000)
    t = f"{ns / 1000:.1f} µs" if ns else "n/a"
    print(f"| {c} | {t} | {fmt_rate(rate(1000, ns))} |")
print("| replaced | no ids, no replay: the 1 000 events are lost | — |")

print("\n### Memory (heap bytes, counting allocator)\n")
try:
    with open(os.path.join(out, "memory.txt")) as f:
        for line in f:
            if line.startswith("|") or line.startswith("memory sse-hub frame"):
                print(line.rstrip())
except OSError:
    print("(memory.txt missing)")

print("\n### End to end over loopback (load generator)\n")
keys = ["design", "capacity", "connections", "users", "rate", "published", "received", "deliveries_per_sec",
        "p50_us", "p99_us", "max_us", "lost", "signalled", "heartbeats", "server_cpu_ns_per_delivery",
        "client_cpu_ns_per_delivery", "server_rss_per_conn_bytes", "server_heap_per_conn_bytes"]
print("| scenario | " + " | ".join(keys) + " |")
print("|---|" + "---:|" * len(keys))
try:
    with open(os.path.join(out, "loadgen.txt")) as f:
        for line in f:
            kv = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
            print(f"| {kv.get('scenario', '?')} | " + " | ".join(kv.get(k, "") for k in keys) + " |")
except OSError:
    print("(loadgen.txt missing)")
