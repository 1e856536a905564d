#!/usr/bin/env bash
# Measures the content path on this machine, each number beside its ceiling
# in the same run (benchmarks in node/bench_test.go, 127.0.0.1 only). The
# machine is shared and noisy, so each iteration measures the ceiling and
# the thing measured back to back, and the ratios are medians of the
# per-iteration ratios:
#   add      node.Add of 256 MiB into the store   vs  sha256  SHA-256 of the same bytes
#   native   node B fetches 256 MiB from node A over weft's native exchange
#   bitswap  node C (native exchange off) fetches 256 MiB from node A over Bitswap
#                                                  vs  stream  a plain libp2p stream of
#                                                      256 MiB between the same hosts
#   small    node B fetches a fresh 1 KiB file from node A (latency, in-process)
#   cli      then scripts/bench/latency.sh: a fresh 1 KiB file fetched through
#            `weft cat` between two daemons (process start included), 21
#            runs, beside the CLI's own baseline, the binary's start alone,
#            and the same fetch through the API from a running client
#   daemons  then scripts/bench/transfer.sh: 256 MiB through the CLI between
#            two daemons, `weft cat` and `weft pin add` beside the best
#            plain libp2p stream (TLS or Noise) and `weft add` beside
#            SHA-256 (and Kubo's add with WEFT_BENCH_KUBO), same run
# Also printed: CPU milliseconds per MiB of each (both nodes share the
# process, so it is the work of both sides).
#
#   scripts/bench/content.sh
#
# Environment:
#   WEFT_BENCH_ITERS=5      iterations (pairs) per benchmark (at least 3)
#   WEFT_BENCH_OUT=PATH     also keep the raw `go test -bench` output there
#
# The benchmarks start their nodes in-process and close them themselves; on
# an interrupt the script stops `go test` by PID and removes its temp dir.
set -euo pipefail
cd "$(dirname "$0")/../.."

ITERS=${WEFT_BENCH_ITERS:-5}
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

CMD=(go test -run '^$' -bench '^BenchmarkContent(Add|Fetch|Small)$' -benchtime "${ITERS}x" -count 1 ./node/)
echo "${CMD[*]}"
"${CMD[@]}" >"$RAW" 2>&1 &
TEST_PID=$!
echo "running (about two minutes on 2 cores) ..."
status=0
wait "$TEST_PID" || status=$?
TEST_PID=""
cat "$RAW"
if [ "$status" != 0 ]; then
  echo "go test failed (exit $status)" >&2
  exit "$status"
fi

echo
echo "medians of $ITERS iterations:"
awk '
  /^BenchmarkContent/ {
    name = $1; sub(/-[0-9]+$/, "", name); sub(/^BenchmarkContent/, "", name)
    for (i = 3; i < NF; i += 2) v[name, $(i+1)] = $i
  }
  END {
    n = 0
    printf "  %-8s %10s %14s\n", "", "MB/s", "CPU ms/MiB"
    split("Add:sha256 Add:add Fetch:stream Fetch:native Fetch:bitswap", rows, " ")
    for (k = 1; k <= 5; k++) {
      split(rows[k], r, ":")
      if (!((r[1], r[2] "-MB/s") in v)) { printf "  %-8s missing from the output\n", r[2]; bad = 1; continue }
      printf "  %-8s %10.1f %14.2f\n", r[2], v[r[1], r[2] "-MB/s"], v[r[1], r[2] "-cpu-ms/MiB"]
    }
    if (bad) exit 1
    print ""
    print "ratios (medians of per-iteration ratios, throughput):"
    printf "  add / sha256      %.2f\n", v["Add", "add/sha256"]
    printf "  native / stream   %.2f\n", v["Fetch", "native/stream"]
    printf "  bitswap / stream  %.2f\n", v["Fetch", "bitswap/stream"]
    if (("Fetch", "steal-%") in v) printf "\nsteal (CPU time the VM host gave to others) during the steps: median %.0f%% (add), %.0f%% (fetch)\n", v["Add", "steal-%"], v["Fetch", "steal-%"]
    if (("Small", "ms/fetch") in v) printf "\n1 KiB fetch from a connected peer (in-process): median %.2f ms\n", v["Small", "ms/fetch"]
  }
' "$RAW"

echo
echo "1 KiB through the CLI (scripts/bench/latency.sh):"
scripts/bench/latency.sh | tail -5 | sed 's/^/  /'

echo
echo "256 MiB between two daemons through the CLI (scripts/bench/transfer.sh):"
WEFT_BENCH_ITERS=$ITERS scripts/bench/transfer.sh | sed -n '/^medians/,$p' | sed 's/^/  /'
