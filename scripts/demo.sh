#!/usr/bin/env bash
# Quick-start demo: builds the binaries, starts a rendezvous and two peers (alice and bob) on this
# machine, and shows them finding each other by peer ID and exchanging messages. Everything runs
# on loopback and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet

bin=target/debug
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin/p2p-rendezvous" --listen 127.0.0.1:0 --identity "$work/rendezvous.key" \
  >"$work/rendezvous.out" 2>"$work/rendezvous.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/rendezvous.out" ] && break; sleep 0.1; done
rendezvous=$(awk 'NR == 1 {print $2}' "$work/rendezvous.out")
if [ -z "$rendezvous" ]; then
  echo "demo: the rendezvous did not start; its log:" >&2
  cat "$work/rendezvous.log" >&2
  exit 1
fi
echo "== rendezvous listening on $rendezvous"

start_peer() { # name
  local name=$1
  mkfifo "$work/$name.in"
  "$bin/p2p-node" --rendezvous "$rendezvous" --identity "$work/$name.key" --listen 127.0.0.1:0 \
    --io lines <"$work/$name.in" 2>"$work/$name.log" > >(sed -u "s/^/[$name] /") &
  pids+=($!)
}
start_peer alice
start_peer bob
exec 3>"$work/alice.in" 4>"$work/bob.in"
alice=$("$bin/p2p-node" id --identity "$work/alice.key")
bob=$("$bin/p2p-node" id --identity "$work/bob.key")
echo "== alice is $alice"
echo "== bob   is $bob"
sleep 1

say() { # fd name text
  echo "   ($2 types: $3)"
  echo "$3" >&"$1"
  sleep 0.7
}
say 3 alice "send $bob Hello Bob, this is Alice. I only knew your public key."
say 4 bob "send $alice Hi Alice! Found you through the rendezvous; this is end-to-end encrypted."
say 3 alice "list"
say 4 bob "send $alice Bye!"
say 3 alice "quit"
say 4 bob "quit"
exec 3>&- 4>&-
sleep 0.5

echo
echo "== part 2: the Python chat demo (python/p2p_server.py and python/p2p_client.py)"
export P2P_NODE_BIN="$PWD/$bin/p2p-node"
python3 python/p2p_server.py --rendezvous "$rendezvous" --identity "$work/server.key" \
  --peer-id-file "$work/server.id" > >(sed -u "s/^/[server] /") 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/server.id" ] && break; sleep 0.1; done
python3 python/p2p_client.py --rendezvous "$rendezvous" --identity "$work/client.key" \
  --peer-id-file "$work/server.id" \
  -m "Hello from the Python client" -m "Messages are JSON: type, payload, metadata, timestamp" \
  2>&1 | sed -u "s/^/[client] /"
sleep 0.5
echo "== done (logs were in $work, now removed)"
