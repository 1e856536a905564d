#!/usr/bin/env bash
# Measures the requester's memory during a large fetch between two weft
# daemons on 127.0.0.1: A adds SIZE_MIB of generated data, B pins it (a full
# fetch over the native exchange), and B's RSS is sampled every 100 ms.
# Prints B's idle RSS, its peak during the fetch and the difference. Both
# daemons are stopped by PID and the temp dir removed on exit.
#
#   scripts/bench/fetchmem.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-1024}
source scripts/bench/lib.sh
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
start_daemon a
A_ADDR=$(tcp_addr a)
start_daemon b "$A_ADDR"
B_PID=${PIDS[1]}
echo "adding $SIZE_MIB MiB on A..."
CID=$(head -c $((SIZE_MIB << 20)) /dev/urandom | "$BIN" add --repo "$WORK/a" -q -)
sleep 2 # let B settle before measuring its idle memory (a deliberate idle window)
IDLE=$(rss_kib "$B_PID")
PEAK=$IDLE
"$BIN" pin add --repo "$WORK/b" "$CID" >/dev/null &
PIN=$!
T0=$(date +%s.%N)
while kill -0 "$PIN" 2>/dev/null; do
  R=$(rss_kib "$B_PID"); [ "$R" -gt "$PEAK" ] && PEAK=$R
  sleep 0.1
done
wait "$PIN"
T1=$(date +%s.%N)
awk -v a="$T0" -v b="$T1" -v s="$SIZE_MIB" 'BEGIN { printf "fetched %d MiB in %.1f s (%.0f MiB/s)\n", s, b - a, s / (b - a) }'
printf 'requester RSS: idle %d MiB, peak %d MiB, peak above idle %d MiB\n' $((IDLE / 1024)) $((PEAK / 1024)) $(((PEAK - IDLE) / 1024))
