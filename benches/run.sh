#!/usr/bin/env bash
# Runs every measurement of BENCHMARKS.md in one go, in this order: the criterion benches, the
# memory figures, the load generator scenarios; then writes the tables to $OUT/tables.md.
#
#   CARGO_TARGET_DIR=/work/target-bench benches/run.sh
#
# About 10 minutes on a 2-core machine. Everything runs over loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench-results}
rm -rf "$OUT" "$TARGET/criterion"
mkdir -p "$OUT"

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
  echo "kernel: $(uname -r)"
  echo "rustc: $(rustc --version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

cargo build --release --example loadgen --example memory
cargo bench --bench fanout --bench churn --bench router 2>&1 | tee "$OUT/criterion.log"
# The churn bench's sse-hub contenders again, with glibc's malloc asking for transparent huge
# pages (glibc >= 2.35; the kernel's THP mode must be `madvise` or `always`): a publish to a
# random user of 100 000 touches cold memory spread over gigabytes, and its p99 is page faults
# and TLB misses (BENCHMARKS.md, "Publish to random users"). Its own criterion directory, so
# that the default-heap figures above stay as they are.
rm -rf "$TARGET/criterion-hugetlb"
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 CRITERION_HOME="$TARGET/criterion-hugetlb" \
  cargo bench --bench churn -- 'churn/sse-hub' 2>&1 | tee "$OUT/churn-hugetlb.log"

"$TARGET/release/examples/memory" | tee "$OUT/memory.txt"

LOADGEN="$TARGET/release/examples/loadgen"
: > "$OUT/loadgen.txt"
scenario() {
  local name=$1
  shift
  echo "== loadgen $name: $*" | tee -a "$OUT/loadgen.log"
  "$LOADGEN" "$@" 2>&1 | tee -a "$OUT/loadgen.log" | grep '^summary' |
    sed "s/^summary /summary scenario=$name /" >> "$OUT/loadgen.txt"
}
# 1 000 connections on one user: 1 500 events/s is 1.5 million deliveries per second.
scenario fanout-1000 --connections 1000 --users 1 --rate 1500 --seconds 5
scenario fanout-1000 --connections 1000 --users 1 --rate 1500 --seconds 5 --capacity 256
scenario fanout-1000 --connections 1000 --users 1 --rate 1500 --seconds 5 --design replaced
# One connection per user: 400 000 events/s is 400 000 deliveries per second.
scenario one-per-user --connections 1000 --users 1000 --rate 400000 --seconds 5
scenario one-per-user --connections 1000 --users 1000 --rate 400000 --seconds 5 --design replaced
# Idle connections held with heartbeats every second (RLIMIT_NOFILE's hard limit here is 20 000
# descriptors per process, so one process can hold 19 980 connections and its own few files).
scenario idle --connections 19980 --users 19980 --rate 0 --seconds 10 --heartbeat-ms 1000
scenario idle --connections 19980 --users 19980 --rate 0 --seconds 10 --heartbeat-ms 1000 --design replaced

# Issue 13: the server stack side by side (sse_hub::serve with its lean HTTP/1.1 path, against
# axum::serve), HTTP/2 streams (h2c, S per connection), and latency at a low rate.
scenario idle-serve --connections 19980 --users 19980 --rate 0 --seconds 10 --heartbeat-ms 1000 --serve axum
scenario idle-h2 --connections 100000 --users 100000 --rate 0 --seconds 10 --heartbeat-ms 5000 --http2 1000 --capacity 8
scenario fanout-500 --connections 1000 --users 1 --rate 500 --seconds 5
scenario fanout-500 --connections 1000 --users 1 --rate 500 --seconds 5 --serve axum
scenario fanout-500 --connections 1000 --users 1 --rate 500 --seconds 5 --http2 100
scenario fanout-500 --connections 1000 --users 1 --rate 500 --seconds 5 --design replaced --serve axum
scenario one-per-user-100k --connections 1000 --users 1000 --rate 100000 --seconds 5
scenario one-per-user-100k --connections 1000 --users 1000 --rate 100000 --seconds 5 --http2 100
scenario one-per-user-100k --connections 1000 --users 1000 --rate 100000 --seconds 5 --design replaced --serve axum
scenario low-rate --connections 100 --users 100 --rate 200 --seconds 5
scenario low-rate --connections 100 --users 100 --rate 200 --seconds 5 --serve axum
scenario low-rate --connections 100 --users 100 --rate 200 --seconds 5 --http2 100

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
python3 benches/summarize.py "$TARGET" "$OUT" | tee "$OUT/tables.md"
