# Shared by the benchmark scripts: a temp dir, a weft binary built into it,
# daemons started on 127.0.0.1 and stopped by PID on exit. Source it after
# `set -euo pipefail` and `cd` to the repo root.
WORK=$(mktemp -d -t weft-bench.XXXXXX)
BIN="$WORK/weft"
PIDS=()
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
CGO_ENABLED=0 go build -o "$BIN" ./cmd/weft

# start_daemon NAME [BOOTSTRAP]: init a repo at $WORK/NAME and run its daemon
# until it writes REPO/api. WEFT_BENCH_SET="KEY=VALUE ..." sets config keys
# (weft config set) before the daemon starts, e.g. debug.pprof=true.
start_daemon() {
  local repo="$WORK/$1"
  local args=(init --repo "$repo" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0)
  [ -n "${2:-}" ] && args+=(--bootstrap "$2")
  "$BIN" "${args[@]}" >/dev/null
  local kv
  for kv in ${WEFT_BENCH_SET:-}; do "$BIN" config set --repo "$repo" "${kv%%=*}" "${kv#*=}" >/dev/null; done
  "$BIN" daemon --repo "$repo" >"$repo.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do [ -s "$repo/api" ] && return 0; sleep 0.05; done
  echo "daemon $1 did not start" >&2; cat "$repo.log" >&2; exit 1
}

# tcp_addr NAME: the daemon's 127.0.0.1 TCP multiaddr with /p2p/ID.
tcp_addr() {
  "$BIN" id --repo "$WORK/$1" --json | sed -n 's/^ *"\(\/ip4\/127.0.0.1\/tcp\/[0-9]*\/p2p\/[^"]*\)".*/\1/p' | head -1
}
