#!/usr/bin/env bash
# Measures two weft daemons' memory around a large add and fetch on
# 127.0.0.1: A adds SIZE_MIB of generated data, B pins it (a full fetch over
# the native exchange). Each daemon's RSS is sampled every 100 ms during the
# work and every second after it, for up to RECOVER seconds. Prints, for A
# (the adder) and B (the requester): idle RSS before, peak during, and how
# long after the fetch RSS took to come back within 1.3x of idle (#19's
# goal: within 60 s). Both daemons are stopped by PID and the temp dir
# removed on exit.
#
#   scripts/bench/fetchmem.sh [SIZE_MIB]     (default 256)
#
# Environment:
#   WEFT_BENCH_SETTLE=40   seconds both daemons idle before idle RSS is read
#                          (the daemon's memory trimmer first looks at 30 s)
#   WEFT_BENCH_RECOVER=90  seconds to watch RSS after the fetch
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-256}
SETTLE=${WEFT_BENCH_SETTLE:-40}
RECOVER=${WEFT_BENCH_RECOVER:-90}
source scripts/bench/lib.sh
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# anonymous and file-backed (mostly the weft binary, shared) RSS in MiB
rss_split() { awk '/RssAnon/ {a=$2} /RssFile/ {f=$2} END {printf "%d anon + %d file", a/1024, f/1024}' "/proc/$1/status"; }
start_daemon a
A_ADDR=$(tcp_addr a)
start_daemon b "$A_ADDR"
A_PID=${PIDS[0]}
B_PID=${PIDS[1]}
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/data"
echo "both daemons idle for ${SETTLE}s before their idle RSS is read..."
sleep "$SETTLE" # a deliberate idle window, not a wait for a condition
IDLE_A=$(rss_kib "$A_PID")
IDLE_B=$(rss_kib "$B_PID")
SPLIT_IDLE_A=$(rss_split "$A_PID")
SPLIT_IDLE_B=$(rss_split "$B_PID")
PEAK_A=$IDLE_A
PEAK_B=$IDLE_B
sample() {
  local r
  r=$(rss_kib "$A_PID"); [ "$r" -gt "$PEAK_A" ] && PEAK_A=$r
  r=$(rss_kib "$B_PID"); [ "$r" -gt "$PEAK_B" ] && PEAK_B=$r
  return 0
}
T0=$(date +%s.%N)
"$BIN" add --repo "$WORK/a" -q "$WORK/data" >"$WORK/cid" &
JOB=$!
while kill -0 "$JOB" 2>/dev/null; do sample; sleep 0.1; done
wait "$JOB"
CID=$(cat "$WORK/cid")
T1=$(date +%s.%N)
"$BIN" pin add --repo "$WORK/b" "$CID" >/dev/null &
JOB=$!
while kill -0 "$JOB" 2>/dev/null; do sample; sleep 0.1; done
wait "$JOB"
T2=$(date +%s.%N)
awk -v a="$T0" -v b="$T1" -v c="$T2" -v s="$SIZE_MIB" 'BEGIN { printf "A added %d MiB in %.1f s; B fetched it in %.1f s (%.0f MiB/s)\n", s, b - a, c - b, s / (c - b) }'
BACK_A=""
BACK_B=""
for t in $(seq 1 "$RECOVER"); do
  sleep 1
  [ -z "$BACK_A" ] && [ "$(rss_kib "$A_PID")" -le $((IDLE_A * 13 / 10)) ] && BACK_A=$t
  [ -z "$BACK_B" ] && [ "$(rss_kib "$B_PID")" -le $((IDLE_B * 13 / 10)) ] && BACK_B=$t
  [ -n "$BACK_A" ] && [ -n "$BACK_B" ] && break
done
END_A=$(rss_kib "$A_PID")
END_B=$(rss_kib "$B_PID")
report() { # NAME IDLE PEAK BACK END SPLIT-IDLE SPLIT-END
  printf '%s: RSS idle %d MiB (%s), peak %d MiB, back within 1.3x of idle after %s s, %d MiB at the end (%s)\n' \
    "$1" $(($2 / 1024)) "$6" $(($3 / 1024)) "${4:-more than $RECOVER}" $(($5 / 1024)) "$7"
}
report "A (adder)    " "$IDLE_A" "$PEAK_A" "$BACK_A" "$END_A" "$SPLIT_IDLE_A" "$(rss_split "$A_PID")"
report "B (requester)" "$IDLE_B" "$PEAK_B" "$BACK_B" "$END_B" "$SPLIT_IDLE_B" "$(rss_split "$B_PID")"
