#!/usr/bin/env bash
# Issue 13's one-connection-per-user target, measured against the design's own limit: rounds of
# the load generator's one-per-user scenario (the line of benches/run.sh: 1 000 users with one
# connection each, 400 000 events/s offered, 5 s), each round running, one after the other,
#
#   hub       sse-hub (EventRouter::channel_response, served by sse_hub::serve)
#   bare-joined  the skeleton of that design (loadgen --design bare-joined: a
#             broadcast::Sender<Bytes> per user, frames encoded once, a bare body stream joining
#             the frames ready together into one chunk as sse-hub does, served by sse_hub::serve)
#   bare      the same skeleton writing each frame alone (loadgen --design bare)
#   replaced  the design sse-hub replaces (served by axum::serve, as in benches/run.sh)
#
# then prints, per design, the median and range of server CPU per delivery (all, and user space
# alone), and per round the ratios of the replaced design to each other design, with their
# median and range. DESIGNS="hub replaced" (say) runs a subset; it must include replaced.
# The rounds are interleaved so that a change in the machine's load touches every design alike;
# run it on a quiet machine (the load average is printed at the start and the end).
#
#   CARGO_TARGET_DIR=/work/target-bench benches/limit_one_per_user.sh [--rounds N] [--seconds S]
#                                                                       [--capacity C]
#
# About 12 s per design and round with the defaults (3 rounds: under 3 minutes). The summary lines
# and the load generator's output go to $OUT (default $CARGO_TARGET_DIR/limit-one-per-user).
#
# A design that lost events, or signalled losses, did less work than the others, so its CPU per
# delivery is not comparable: the script warns. The bare design has no replay window, so a
# connection that falls further behind than the ring (--capacity, the load generator's 16 by
# default) loses events where sse-hub back-fills them; a larger --capacity (given to sse-hub
# and the bare design alike) keeps that from happening.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
SECONDS_PER_RUN=5
CAPACITY=16
DESIGNS=${DESIGNS:-hub bare-joined bare replaced}
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --capacity) CAPACITY=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--seconds S] [--capacity C]" >&2; exit 2 ;;
  esac
done

TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/limit-one-per-user}
mkdir -p "$OUT"
: > "$OUT/summaries.txt"
: > "$OUT/loadgen.log"

cargo build --release --example loadgen
LOADGEN="$TARGET/release/examples/loadgen"

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
SCENARIO=(--connections 1000 --users 1000 --rate 400000 --seconds "$SECONDS_PER_RUN"
  --capacity "$CAPACITY")
for round in $(seq 1 "$ROUNDS"); do
  for design in $DESIGNS; do
    echo "== round $round, $design: ${SCENARIO[*]}" | tee -a "$OUT/loadgen.log"
    "$LOADGEN" "${SCENARIO[@]}" --design "$design" 2>&1 | tee -a "$OUT/loadgen.log" |
      grep '^summary' | sed "s/^summary /summary round=$round /" | tee -a "$OUT/summaries.txt" ||
      echo "round $round, $design: no summary (see $OUT/loadgen.log)" >&2
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT/summaries.txt" "$DESIGNS" <<'EOF'
import statistics
import sys

designs = sys.argv[2].split()
others = [d for d in designs if d != "replaced"]
runs = {}  # (round, design) -> {key: value}
for line in open(sys.argv[1]):
    fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    runs[(fields["round"], fields["design"])] = fields
rounds = sorted({r for r, _ in runs}, key=int)
warnings = []

def spread(values, unit=""):
    """The median and [min..max]: ratios (unit "x") and writes ("w") to 2 decimals."""
    if not values:
        return "n/a"
    digits = 2 if unit in ("x", "w") else 0
    suffix = "x" if unit == "x" else ""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f}{suffix} [{lo:.{digits}f}..{hi:.{digits}f}]"

print()
print("| design | server CPU ns/delivery | of which user space | writes/delivery | deliveries/s "
      "| lost | signalled |")
print("|---|---:|---:|---:|---:|---:|---:|")
for d in designs:
    got = [runs[(r, d)] for r in rounds if (r, d) in runs]
    cpu = [float(f["server_cpu_ns_per_delivery"]) for f in got]
    user = [float(f["server_user_cpu_ns_per_delivery"]) for f in got]
    writes = [float(f["server_writes_per_delivery"]) for f in got]
    rate = [float(f["deliveries_per_sec"]) for f in got]
    lost = sum(int(f["lost"]) for f in got)
    signalled = sum(int(f["signalled"]) for f in got)
    print(f"| {d} | {spread(cpu)} | {spread(user)} | {spread(writes, 'w')} | {spread(rate)} "
          f"| {lost} | {signalled} |")
    if lost or signalled:
        # Events not delivered are work not done: the CPU per delivery is not comparable.
        warnings.append(f"warning: {d} lost {lost} and signalled {signalled} events: its CPU per "
                        "delivery is not comparable")

print()
print("| round | " + " | ".join(f"replaced/{d}" for d in others) + " | "
      + " | ".join(f"replaced/{d}, user space" for d in others) + " |")
print("|---|" + "---:|" * (2 * len(others)))
ratios = {d + s: [] for d in others for s in ["", "-user"]}
for r in rounds:
    if not all((r, d) in runs for d in designs):
        print(f"| {r} | (a design has no summary) |")
        continue
    for d in others:
        for key, suffix in [("server_cpu_ns_per_delivery", ""),
                            ("server_user_cpu_ns_per_delivery", "-user")]:
            mine = float(runs[(r, d)][key])
            ratio = float(runs[(r, "replaced")][key]) / mine if mine > 0 else float("nan")
            ratios[d + suffix].append(ratio)
    cells = [f"{ratios[d][-1]:.2f}x" for d in others] + [f"{ratios[d + '-user'][-1]:.2f}x" for d in others]
    print(f"| {r} | " + " | ".join(cells) + " |")
cells = [spread(ratios[d], "x") for d in others] + [spread(ratios[d + "-user"], "x") for d in others]
print("| median [range] | " + " | ".join(cells) + " |")
for warning in warnings:
    print(warning)
EOF
