#!/usr/bin/env bash
# The main job: a small local weft swarm on 127.0.0.1 doing what weft is for.
#
#   scripts/swarm.sh [NODES]      (default 5, at least 3)
#
# It builds weft, starts NODES daemons (embedded Badger stores in a temp dir)
# that are told only node0's address, and then, step by step:
#   1. content: node1 adds a file; the last node finds node1 as its provider
#      through the DHT and fetches it (sizes and times shown);
#   2. a feed: node0 publishes under a key, the other nodes follow it, and
#      each new version arrives at every follower (times shown);
#   3. a collection: node0 creates one that keeps 3 copies of each item, the
#      others join, node0 adds items, and `collection status` shows every
#      item pinned on 3 nodes;
#   4. the dashboard's address, and commands to paste into another terminal.
# It keeps the swarm up until Ctrl-C (or for $WEFT_SWARM_SECONDS seconds).
# Every wait is on a condition with a deadline ($WEFT_SWARM_WAIT seconds,
# default 60), never a fixed sleep. Every daemon it starts is stopped by PID
# on exit, and the temp dir is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
SECONDS_UP=${WEFT_SWARM_SECONDS:-0}
WAIT=${WEFT_SWARM_WAIT:-60}
R=3 # copies the collection keeps of each item
if [ "$N" -lt "$R" ]; then
  echo "swarm.sh: need at least $R nodes (the collection keeps $R copies), got $N" >&2
  exit 2
fi
WORK=$(mktemp -d -t weft-swarm.XXXXXX)
BIN="$WORK/weft"
PIDS=()
SLEEPER="" # the sleep the script waits on at the end

cleanup() {
  set +e # stop everything even if one kill fails
  [ -z "$SLEEPER" ] || kill "$SLEEPER" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
since() { echo "$(($(now_ms) - $1)) ms"; } # since START_MS
repo() { echo "$WORK/node$1"; }
w() { local i=$1; shift; "$BIN" "$@" --repo "$(repo "$i")"; } # w NODE CMD ARGS...
# cmdline NODE CMD ARGS...: the command as a newcomer would paste it.
cmdline() { local i=$1; shift; echo "$BIN $* --repo $(repo "$i")"; }

# until_true WHAT CMD...: runs CMD until it succeeds, for at most $WAIT
# seconds; on timeout says what it waited for and fails the script.
until_true() {
  local what=$1 end=$(($(now_ms) + WAIT * 1000))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(now_ms)" -gt "$end" ]; then
      echo "swarm.sh: gave up after ${WAIT}s waiting for $what" >&2
      return 1
    fi
    sleep 0.1
  done
}

name_of() { # PEER-ID -> nodeI
  local i
  for i in "${!IDS[@]}"; do [ "${IDS[$i]}" = "$1" ] && { echo "node$i"; return; }; done
  echo "$1"
}

echo "building weft..."
CGO_ENABLED=0 go build -buildvcs=auto -o "$BIN" ./cmd/weft # auto: the revision in `weft version` when built from a git checkout

echo
echo "== the swarm: $N daemons on 127.0.0.1, each told only node0's address"
IDS=()
seed_addr=""
for i in $(seq 0 $((N - 1))); do
  args=(init --repo "$(repo "$i")" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0)
  [ -n "$seed_addr" ] && args+=(--bootstrap "$seed_addr")
  "$BIN" "${args[@]}" >/dev/null
  # Shorter collection timings than the defaults (10s, 30s, 60s), so that the
  # members settle in seconds and a stopped member's items move in 20s.
  "$BIN" config set --repo "$(repo "$i")" collection.heartbeat_interval 2s >/dev/null
  "$BIN" config set --repo "$(repo "$i")" collection.suspect_after 6s >/dev/null
  "$BIN" config set --repo "$(repo "$i")" collection.grace_period 20s >/dev/null
  "$BIN" daemon --repo "$(repo "$i")" >"$(repo "$i").log" 2>&1 &
  PIDS+=($!)
  if ! until_true "node$i's API (REPO/api)" test -s "$(repo "$i")/api"; then
    cat "$(repo "$i").log" >&2
    exit 1
  fi
  IDS+=("$(w "$i" id | sed -n 1p)")
  if [ -z "$seed_addr" ]; then
    seed_addr=$(w 0 id | sed -n 's|^ *\(/ip4/127.0.0.1/tcp/[0-9]*/p2p/.*\)$|\1|p' | sed -n 1p)
  fi
  printf 'node%d  %s  api %s  pid %d\n' "$i" "${IDS[$i]}" "$(cat "$(repo "$i")/api")" "${PIDS[-1]}"
done
echo "(collections here: heartbeat_interval 2s, suspect_after 6s, grace_period 20s, set with 'weft config set' before each start)"

table_full() { # NODE: its DHT routing table holds every other node
  local n
  n=$(w "$1" dht table | tail -1 | cut -d' ' -f1)
  [ "$n" -ge $((N - 1)) ]
}
start=$(now_ms)
for i in $(seq 0 $((N - 1))); do
  until_true "node$i's DHT routing table to hold the $((N - 1)) others" table_full "$i"
done
echo "every routing table holds the $((N - 1)) other nodes after $(since "$start") (found through DHT walks from node0)"

# ---------------------------------------------------------------- content
last=$((N - 1))
echo
echo "== content: node1 adds a file; node$last finds it through the DHT and fetches it"
SRC="$WORK/demo.bin"
head -c $((8 << 20)) /dev/urandom >"$SRC"
start=$(now_ms)
CID=$(w 1 add -q "$SRC")
echo "node1    added 8.0 MiB of random bytes in $(since "$start"): $CID"
echo "         (node1 announces itself as a provider of $CID in the DHT)"
has_provider() { w "$last" providers "$CID" | grep -x "${IDS[1]}"; }
start=$(now_ms)
until_true "node$last to find node1 as a provider of $CID" has_provider
providers=$(w "$last" providers "$CID" | while read -r p; do printf '%s ' "$(name_of "$p")"; done)
echo "node$last    DHT provider lookup found: ${providers}(after $(since "$start"))"
start=$(now_ms)
saved=$(w "$last" get "$CID" -o "$WORK/fetched.bin")
ms=$(($(now_ms) - start))
cmp -s "$SRC" "$WORK/fetched.bin" || { echo "swarm.sh: the fetched bytes differ from the added ones" >&2; exit 1; }
echo "node$last    $saved in $ms ms ($(((8 << 20) / 1024 * 1000 / (ms > 0 ? ms : 1) / 1024)) MiB/s); bytes identical to node1's file"

# ---------------------------------------------------------------- feed
echo
echo "== a feed: node0 publishes under its key 'blog'; node1..node$last follow it"
FEED=$(w 0 key gen blog | cut -d' ' -f2)
echo "node0    key gen blog -> feed $FEED"
for i in $(seq 1 "$last"); do
  w "$i" feed follow "$FEED" --pin >/dev/null
done
echo "node1..node$last follow $FEED --pin (fetch and pin every version)"
follower_at() { # NODE SEQ: the follower holds and has pinned version SEQ
  w "$1" feed ls | awk -v f="$FEED" -v s="$2" '$1 == f && $3 == s && $5 == s { ok = 1 } END { exit !ok }'
}
for v in 1 2; do
  post=$(echo "post $v from node0, $(date -u +%FT%TZ)" | w 0 add -q -)
  start=$(now_ms)
  echo "node0    $(w 0 feed publish --key blog "$post")"
  for i in $(seq 1 "$last"); do
    until_true "node$i to get version $v of the feed" follower_at "$i" "$v"
    echo "node$i    has version $v, fetched and pinned, $(since "$start") after the publish"
  done
done

# ---------------------------------------------------------------- collection
echo
echo "== a collection: node0 creates 'photos' keeping $R copies of each item; the others join"
COL=$(w 0 collection create photos --replication "$R")
echo "node0    collection create photos --replication $R -> $COL"
for i in $(seq 1 "$last"); do
  w "$i" collection join "$COL" >/dev/null
done
echo "node1..node$last collection join $COL"
members_alive() { w 0 collection list --json | grep "\"members_alive\": $N,"; }
start=$(now_ms)
until_true "node0 to hear all $N members of the collection" members_alive
echo "node0    hears all $N members alive after $(since "$start")"
ITEMS=3
for k in $(seq 1 "$ITEMS"); do
  head -c $((1 << 20)) /dev/urandom >"$WORK/photo$k.jpg"
  c=$(w 0 add -q "$WORK/photo$k.jpg")
  w 0 collection add photos "$c" --name "photo$k.jpg" >/dev/null
  echo "node0    collection add photos $c --name photo$k.jpg  (1.0 MiB)"
done
all_ok() { # NODE: every item is pinned on its R holders
  w "$1" collection list --json | grep "\"ok\": $ITEMS,"
}
start=$(now_ms)
for i in $(seq 0 "$last"); do
  until_true "node$i to see all $ITEMS items pinned on $R nodes" all_ok "$i"
done
echo "every node sees all $ITEMS items with $R copies after $(since "$start"):"
legend=""
for i in "${!IDS[@]}"; do legend+="${legend:+  }node$i=${IDS[$i]:0:6}…${IDS[$i]: -6}"; done
echo "  ($legend)"
echo "\$ $(cmdline 2 collection status photos)"
w 2 collection status photos | sed 's/^/  /'

# ---------------------------------------------------------------- dashboard
echo
echo "== the dashboard of node0 (peers, bandwidth, feeds, collections, a live graph of the swarm):"
echo "  http://$(cat "$(repo 0)/api")/ui/?token=$(cat "$(repo 0)/api.token")"
echo "  (every node has one: http://\$(cat REPO/api)/ui/?token=\$(cat REPO/api.token))"
# The daemon prints its gateway's address when ready (a free port here).
GW=$(sed -n 's|^gateway on \(http://[^ ]*\)/ipfs/$|\1|p' "$(repo 0).log" | head -1)
if [ -n "$GW" ]; then
  echo
  echo "== node0's HTTP gateway (read-only, as Kubo's on :8080): the file added above, by path, as a CAR, as a range:"
  echo "  $GW/ipfs/$CID"
  echo "  curl -s '$GW/ipfs/$CID?format=car' | wc -c"
  echo "  curl -s -H 'Range: bytes=0-99' $GW/ipfs/$CID | wc -c"
fi

# ---------------------------------------------------------------- next steps
echo
echo "== try it, in another terminal (repos and logs are in $WORK):"
cat <<EOF
  $(cmdline 3 status)
  $(cmdline 3 peers)
  $(cmdline 2 cat "$CID") | cmp - $SRC && echo same bytes
  $(cmdline 2 providers "$CID")
  echo "hello swarm" | $(cmdline 1 add -)            # prints a CID
  $(cmdline 0 feed publish --key blog CID)          # followers get it
  $(cmdline 3 feed ls)
  $(cmdline 0 collection add photos CID --name hello.txt)
  $(cmdline 3 collection items photos)
  $(cmdline 3 collection status photos)
  $(cmdline "$last" shutdown)                       # 20s later (grace_period) its items are on others: collection status
  $(cmdline 0 dht find-peer "${IDS[$last]}")
  tail -f $(repo 0).log
EOF
echo
# `sleep & wait`: a signal runs the trap at once, not after the sleep.
if [ "$SECONDS_UP" -gt 0 ]; then
  echo "the swarm stops in ${SECONDS_UP}s (WEFT_SWARM_SECONDS)."
  sleep "$SECONDS_UP" &
  SLEEPER=$!
  wait "$SLEEPER"
else
  echo "Ctrl-C stops the swarm and removes $WORK."
  while :; do
    sleep 3600 &
    SLEEPER=$!
    wait "$SLEEPER"
  done
fi
