#!/usr/bin/env bash
# Measures 256 MiB moving between two weft daemons on 127.0.0.1 through the
# CLI, beside baselines of the same run (scripts/bench/transfer): `weft cat`
# and `weft pin add` on B of files A added, each against the best plain
# libp2p stream (TLS or Noise, two processes) of the same size; `weft add`
# on A against SHA-256 of the same bytes (and, with WEFT_BENCH_KUBO, Kubo's
# offline add and, as root, `ipfs cat` between two Kubo daemons in a
# loopback-only network namespace). Medians of per-iteration ratios.
#
#   scripts/bench/transfer.sh
#
# Environment:
#   WEFT_BENCH_ITERS=5        iterations (at least 3)
#   WEFT_BENCH_SIZE=268435456 bytes per transfer
#   WEFT_BENCH_KUBO=PATH      a Kubo (ipfs) binary for the add and cat baselines
# Daemons are stopped by PID and the temp dir removed on exit (lib.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bench/lib.sh
go build -o "$WORK/transfer" ./scripts/bench/transfer
start_daemon a
A_ADDR=$(tcp_addr a)
start_daemon b "$A_ADDR"
for _ in $(seq 1 100); do "$BIN" peers --repo "$WORK/b" | grep -q 12D3 && break; sleep 0.05; done
args=(-weft "$BIN" -a "$WORK/a" -b "$WORK/b" -iters "${WEFT_BENCH_ITERS:-5}" -size "${WEFT_BENCH_SIZE:-268435456}")
[ -n "${WEFT_BENCH_KUBO:-}" ] && args+=(-kubo "$WEFT_BENCH_KUBO")
"$WORK/transfer" -pids "$(IFS=,; echo "${PIDS[*]}")" "${args[@]}"
