#!/usr/bin/env bash
# Measures the latency of fetching a small file through the CLI: two weft
# daemons on 127.0.0.1, A adds ROUNDS fresh 1 KiB files, and for each one
# `weft cat --repo B CID` is timed from command start to the last byte
# (process start included), after 5 untimed warm-up fetches. Prints the
# median and p90 in ms, beside two baselines of the same run: the CLI's cat
# of a block B already holds, and starting the binary alone (`weft --help`).
# Then scripts/bench/apilat times the same fetch through the HTTP API from a
# client that is already running, which shows weft's part apart from the
# machine's cost of starting a process. The clock is bash's $EPOCHREALTIME,
# read just before and after the command, so the time does not include
# starting a `date` process. Daemons are stopped by PID and the temp dir removed on
# exit.
#
#   scripts/bench/latency.sh [ROUNDS]     (default 21)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-21}
source scripts/bench/lib.sh
go build -o "$WORK/apilat" ./scripts/bench/apilat
start_daemon a
A_ADDR=$(tcp_addr a)
start_daemon b "$A_ADDR"
for _ in $(seq 1 100); do "$BIN" peers --repo "$WORK/b" | grep -q 12D3 && break; sleep 0.05; done
# Warm-up, untimed (as in BenchmarkContentSmall): the first fetches after
# the daemons start overlap their DHT bootstrap and are slower.
for _ in 1 2 3 4 5; do
  CID=$(head -c 1024 /dev/urandom | "$BIN" add --repo "$WORK/a" -q -)
  "$BIN" cat --repo "$WORK/b" "$CID" >/dev/null
done
: >"$WORK/ms"
for i in $(seq 1 "$ROUNDS"); do
  CID=$(head -c 1024 /dev/urandom | "$BIN" add --repo "$WORK/a" -q -)
  t0=${EPOCHREALTIME/./}
  "$BIN" cat --repo "$WORK/b" "$CID" >/dev/null
  t1=${EPOCHREALTIME/./}
  echo $((t1 - t0)) >>"$WORK/ms"
done
# Baseline in the same run: the CLI asking B for something it holds.
: >"$WORK/base"
for i in $(seq 1 "$ROUNDS"); do
  t0=${EPOCHREALTIME/./}; "$BIN" cat --repo "$WORK/b" "$CID" >/dev/null; t1=${EPOCHREALTIME/./}
  echo $((t1 - t0)) >>"$WORK/base"
done
# The process start alone: the binary, its runtime and package init.
: >"$WORK/start"
for i in $(seq 1 "$ROUNDS"); do
  t0=${EPOCHREALTIME/./}; "$BIN" --help >/dev/null; t1=${EPOCHREALTIME/./}
  echo $((t1 - t0)) >>"$WORK/start"
done
stats() { sort -n "$1" | awk '{a[NR]=$1} END {printf "median %.2f ms, p90 %.2f ms", a[int((NR+1)/2)]/1000, a[int(NR*0.9+0.5)]/1000}'; }
echo "1 KiB fetched from a connected peer through 'weft cat': $(stats "$WORK/ms") ($ROUNDS runs)"
echo "baseline, 'weft cat' of a block already held:          $(stats "$WORK/base")"
echo "process start alone, 'weft --help':                     $(stats "$WORK/start")"
"$WORK/apilat" -a "$WORK/a" -b "$WORK/b" -rounds "$ROUNDS"
