#!/usr/bin/env bash
# Starts a small local weft swarm on 127.0.0.1 (embedded Badger stores in a
# temp dir), shows the nodes finding each other through the DHT, and keeps it
# up until Ctrl-C (or for $WEFT_SWARM_SECONDS seconds). Every daemon it starts
# is stopped by PID on exit, and the temp dir is removed.
#
#   scripts/swarm.sh [NODES]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
SECONDS_UP=${WEFT_SWARM_SECONDS:-0}
WORK=$(mktemp -d -t weft-swarm.XXXXXX)
BIN="$WORK/weft"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building weft..."
CGO_ENABLED=0 go build -o "$BIN" ./cmd/weft

wait_ready() { # repo
  for _ in $(seq 1 200); do
    [ -s "$1/api" ] && return 0
    sleep 0.05
  done
  echo "node $1 did not become ready; log:" >&2; cat "$1.log" >&2; return 1
}

seed_addr=""
for i in $(seq 0 $((N - 1))); do
  repo="$WORK/node$i"
  args=(init --repo "$repo" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0)
  [ -n "$seed_addr" ] && args+=(--bootstrap "$seed_addr")
  "$BIN" "${args[@]}" >/dev/null
  "$BIN" daemon --repo "$repo" >"$repo.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$repo"
  if [ -z "$seed_addr" ]; then
    seed_addr=$("$BIN" id --repo "$repo" --json | sed -n 's/^ *"\(\/ip4\/127.0.0.1\/tcp\/[0-9]*\/p2p\/[^"]*\)".*/\1/p' | head -1)
  fi
  printf 'node%d  %s  (pid %d)\n' "$i" "$("$BIN" id --repo "$repo" | head -1)" "${PIDS[-1]}"
done

echo
echo "every node knows only node0; each now looks the last node up in the DHT:"
last_id=$("$BIN" id --repo "$WORK/node$((N - 1))" | head -1)
for i in $(seq 1 $((N - 2))); do
  printf 'node%d find-peer node%d: ' "$i" "$((N - 1))"
  "$BIN" dht find-peer --repo "$WORK/node$i" "$last_id" | sed -n 2p
done
echo
"$BIN" status --repo "$WORK/node0"
echo
"$BIN" peers --repo "$WORK/node0"
echo
echo "repos in $WORK; try: $BIN peers --repo $WORK/node1"
if [ "$SECONDS_UP" -gt 0 ]; then
  sleep "$SECONDS_UP"
else
  echo "Ctrl-C stops the swarm."
  while :; do sleep 3600; done
fi
