#!/usr/bin/env bash
# Measures what weft daemons cost at rest, on 127.0.0.1 only:
#   (a) process start to ready (REPO/api written and GET /api/v1/id answered),
#       median of several starts on fresh repos;
#   (b) idle RSS (and PSS, anonymous and file-backed RSS, CPU) of isolated
#       daemons after an idle window;
#   (c) total RSS/PSS and CPU (% of one core) of a swarm of idle daemons
#       bootstrapped to the first one;
#   (d) with WEFT_BENCH_KUBO, the same idle swarm of Kubo daemons, measured
#       the same way in the same run, as the baseline (as root: Kubo runs
#       with its test profile in a network namespace holding only loopback).
# Prints a table and writes the results as JSON.
#
#   scripts/bench/daemons.sh [flags of scripts/bench/daemons, e.g. -set swarm.max_memory=64MiB]
#
# Environment:
#   WEFT_BENCH_QUICK=1       smoke test: 5 start-up runs, 5 s idle windows
#   WEFT_BENCH_OUT=PATH      results JSON (default: daemons.json in a new temp dir, printed)
#   WEFT_BENCH_RUNS=N        start-up runs (default 7, at least 5)
#   WEFT_BENCH_IDLE=30s      idle window for (b) and (c)
#   WEFT_BENCH_NODES=N       swarm size for (c) (default 20)
#   WEFT_BENCH_RSS_DAEMONS=N isolated daemons for (b) (default 3)
#   WEFT_BENCH_KUBO=PATH     a Kubo (ipfs) binary for the (d) baseline
#   WEFT_BENCH_COMMIT=REV    commit to record when this is not a git checkout
#   GOGC, GOMEMLIMIT, GODEBUG are passed on to the daemons (and recorded).
#
# The Go runtime's view of each daemon (heap, stacks, goroutines, next GC) is
# read from GET /metrics after each idle window. To see which code holds the
# memory, run scripts/bench/memprobe (a heap and goroutine profile of idle
# in-process nodes).
#
# It builds weft and the benchmark into a temp dir, and on exit (normal,
# error or signal) stops every daemon it started by PID and removes the dir.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=$(mktemp -d -t weft-bench.XXXXXX)
PIDS_FILE="$WORK/pids"
BENCH_PID=""

cleanup() {
  # The benchmark stops its own daemons; this catches whatever it could not
  # (it was killed, or the build was interrupted).
  if [ -n "$BENCH_PID" ]; then kill -TERM "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; fi
  if [ -f "$PIDS_FILE" ]; then
    while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$PIDS_FILE"
    for _ in $(seq 1 100); do # up to 10 s for them to exit
      alive=0
      while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$PIDS_FILE"
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$PIDS_FILE"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building weft and the benchmark into $WORK ..."
CGO_ENABLED=0 go build -o "$WORK/weft" ./cmd/weft
go build -o "$WORK/bench" ./scripts/bench/daemons
# The commit built, recorded in the results (WEFT_BENCH_COMMIT when this is
# not a git checkout).
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
if [ -n "$commit" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit+dirty"
fi
commit=${commit:-${WEFT_BENCH_COMMIT:-}}

mkdir -p "$WORK/repos"
"$WORK/bench" -weft "$WORK/weft" -work "$WORK/repos" -pids "$PIDS_FILE" -commit "$commit" "$@" &
BENCH_PID=$!
status=0
wait "$BENCH_PID" || status=$?
BENCH_PID=""
exit "$status"
