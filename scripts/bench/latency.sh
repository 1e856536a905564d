#!/usr/bin/env bash
# Measures the latency of fetching a small file through the CLI: two weft
# daemons on 127.0.0.1, A adds ROUNDS fresh 1 KiB files, and for each one
# `weft cat --repo B CID` is timed from command start to the last byte
# (process start included). Prints the median and p90 in ms. Daemons are
# stopped by PID and the temp dir removed on exit.
#
#   scripts/bench/latency.sh [ROUNDS]     (default 21)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-21}
WORK=$(mktemp -d -t weft-latency.XXXXXX)
BIN="$WORK/weft"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
go build -o "$BIN" ./cmd/weft
start() { # name [bootstrap]
  local repo="$WORK/$1"
  local args=(init --repo "$repo" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0)
  [ -n "${2:-}" ] && args+=(--bootstrap "$2")
  "$BIN" "${args[@]}" >/dev/null
  "$BIN" daemon --repo "$repo" >"$repo.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do [ -s "$repo/api" ] && return 0; sleep 0.05; done
  echo "daemon $1 did not start" >&2; cat "$repo.log" >&2; exit 1
}
start a
A_ADDR=$("$BIN" id --repo "$WORK/a" --json | sed -n 's/^ *"\(\/ip4\/127.0.0.1\/tcp\/[0-9]*\/p2p\/[^"]*\)".*/\1/p' | head -1)
start b "$A_ADDR"
for _ in $(seq 1 100); do "$BIN" peers --repo "$WORK/b" | grep -q 12D3 && break; sleep 0.05; done
: >"$WORK/ms"
for i in $(seq 1 "$ROUNDS"); do
  CID=$(head -c 1024 /dev/urandom | "$BIN" add --repo "$WORK/a" -q -)
  t0=$(date +%s%N)
  "$BIN" cat --repo "$WORK/b" "$CID" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000)) >>"$WORK/ms"
done
# Baseline in the same run: the CLI asking B for something it holds.
: >"$WORK/base"
for i in $(seq 1 "$ROUNDS"); do
  t0=$(date +%s%N); "$BIN" cat --repo "$WORK/b" "$CID" >/dev/null; t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000)) >>"$WORK/base"
done
stats() { sort -n "$1" | awk '{a[NR]=$1} END {printf "median %.2f ms, p90 %.2f ms", a[int((NR+1)/2)]/1000, a[int(NR*0.9+0.5)]/1000}'; }
echo "1 KiB fetched from a connected peer through 'weft cat': $(stats "$WORK/ms") ($ROUNDS runs)"
echo "baseline, 'weft cat' of a block already held:          $(stats "$WORK/base")"
