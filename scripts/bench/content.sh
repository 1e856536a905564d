#!/usr/bin/env bash
# Measures the content path on this machine, each number beside its ceiling
# in the same run (benchmarks in node/bench_test.go, 127.0.0.1 only):
#   add    node.Add of 256 MiB into Badger   vs  sha256  SHA-256 of the same bytes
#   fetch    node B fetches 256 MiB from node A over weft's native exchange
#   bitswap  node C (native exchange off) fetches 256 MiB from node A over Bitswap
#                                           vs  stream  a plain libp2p stream of 256 MiB between the same hosts
#   small    node B fetches a fresh 1 KiB file from node A (latency)
# Prints benchstat's summary (if benchstat can be fetched through the Go
# module proxy), the median throughput of each and the ratios add/sha256 and
# fetch/stream.
#
#   scripts/bench/content.sh
#
# Environment:
#   WEFT_BENCH_COUNT=5      runs of each benchmark (-count)
#   WEFT_BENCH_TIME=2x      iterations per run (-benchtime)
#   WEFT_BENCH_OUT=PATH     also keep the raw `go test -bench` output there
#   WEFT_BENCH_NO_BENCHSTAT=1  skip benchstat, print only the script's medians
#
# The benchmarks start their nodes in-process and close them themselves; on
# an interrupt the script stops `go test` by PID and removes its temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."

COUNT=${WEFT_BENCH_COUNT:-5}
BENCHTIME=${WEFT_BENCH_TIME:-2x}
WORK=$(mktemp -d -t weft-bench-content.XXXXXX)
RAW="$WORK/content.txt"
TEST_PID=""

cleanup() {
  if [ -n "$TEST_PID" ] && kill -0 "$TEST_PID" 2>/dev/null; then
    kill -TERM "$TEST_PID" 2>/dev/null || true
    wait "$TEST_PID" 2>/dev/null || true
  fi
  if [ -n "${WEFT_BENCH_OUT:-}" ] && [ -f "$RAW" ]; then cp "$RAW" "$WEFT_BENCH_OUT"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "go test -run '^\$' -bench '^BenchmarkContent(Add|Fetch)\$' -benchtime $BENCHTIME -count $COUNT ./node/"
go test -run '^$' -bench '^BenchmarkContent(Add|Fetch)$' -benchtime "$BENCHTIME" -count "$COUNT" ./node/ >"$RAW" 2>&1 &
TEST_PID=$!
echo "running (about a minute on 2 cores) ..."
status=0
wait "$TEST_PID" || status=$?
TEST_PID=""
cat "$RAW"
if [ "$status" != 0 ]; then
  echo "go test failed (exit $status)" >&2
  exit "$status"
fi

if [ -z "${WEFT_BENCH_NO_BENCHSTAT:-}" ]; then
  echo
  if ! (cd "$WORK" && timeout 300 go run golang.org/x/perf/cmd/benchstat@latest content.txt 2>/dev/null); then
    echo "(benchstat not available through the module proxy; medians below are the script's own)"
  fi
fi

echo
echo "medians of $COUNT runs ($BENCHTIME each):"
awk '
  /^Benchmark/ && /small/ {
    for (i = 2; i <= NF; i++) if ($i == "ns/op") small = small " " $(i-1)
  }
  /^Benchmark/ && /MB\/s/ {
    name = $1; sub(/-[0-9]+$/, "", name); sub(/^BenchmarkContent(Add|Fetch)\//, "", name)
    for (i = 2; i <= NF; i++) {
      if ($i == "MB/s") mbs[name] = mbs[name] " " $(i-1)
      if ($i == "ns/op") nsop[name] = nsop[name] " " $(i-1)
    }
  }
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j+1] = a[j]; a[j+1] = t }
    if (n == 0) return 0
    if (n % 2) return a[(n + 1) / 2]
    return (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    split("sha256 add stream fetch bitswap", order, " ")
    for (k = 1; k <= 5; k++) {
      name = order[k]
      if (!(name in mbs)) { printf "  %-7s missing from the output\n", name; bad = 1; continue }
      m[name] = median(mbs[name])
      printf "  %-7s %9.1f MB/s   %7.3f s per 256 MiB\n", name, m[name], median(nsop[name]) / 1e9
    }
    if (bad) exit 1
    print ""
    print "ratios (throughput):"
    printf "  add / sha256     %.2f\n", m["add"] / m["sha256"]
    printf "  fetch / stream   %.2f   (native exchange)\n", m["fetch"] / m["stream"]
    printf "  bitswap / stream %.2f\n", m["bitswap"] / m["stream"]
    if (small != "") printf "\n1 KiB fetch from a connected peer: median %.2f ms\n", median(small) / 1e6
  }
' "$RAW"
