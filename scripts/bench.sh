#!/usr/bin/env bash
# One benchmark command (issue #16): builds everything it compares and runs it side by side,
# interleaved over several rounds, then writes reports/bench/bench.md, bench.json and bench.svg
# (medians, ratios, the issue's targets). Figures are reported, never asserted.
#
#   scripts/bench.sh            full run: release build, 3 rounds, dumbpipe 0.40.1 installed from
#                               crates.io into target/bench-tools, netsim long link when root
#   scripts/bench.sh smoke      tiny sizes, 1 round, debug build (what test-all.sh / CI runs);
#                               dumbpipe only if already installed, no netsim, no rendezvous load
#
# Environment: BENCH_ROUNDS, BENCH_BULK_MIB, BENCH_OUT (default reports/bench),
# BENCH_NODE_ARGS (extra p2p-node/quinn-pipe transport arguments, e.g. "--congestion bbr"),
# BENCH_NODE_VARIANTS (p2p-node variants run in the same rounds, "NAME=ARGS;NAME=ARGS"),
# BENCH_SKIP="dumbpipe netsim rendezvous python" (any of them).
#
# Every program runs on loopback only: when possible the driver runs in a network namespace of
# its own holding nothing but `lo` (unshare -n as root, unshare -rn otherwise), so dumbpipe (whose
# iroh preset dials n0's public relays and discovery) cannot reach anything outside. Without a
# namespace dumbpipe is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
case "$mode" in full|smoke) ;; *) echo "usage: scripts/bench.sh [full|smoke]" >&2; exit 2;; esac
target=${CARGO_TARGET_DIR:-$PWD/target}
out=${BENCH_OUT:-reports/bench}
skip=" ${BENCH_SKIP:-} "
mkdir -p "$out"
note() { echo "bench.sh: $*" >&2; echo "- $*" >>"$out/notes.md"; }
: >"$out/notes.md"

if [ "$mode" = smoke ]; then
  profile=debug; cargo_profile=()
  rounds=${BENCH_ROUNDS:-1}; bulk=${BENCH_BULK_MIB:-16}
  sizes=(--small 5000 --latency 100 --python-messages 500)
else
  profile=release; cargo_profile=(--release)
  rounds=${BENCH_ROUNDS:-3}; bulk=${BENCH_BULK_MIB:-512}
  sizes=(--small 200000 --latency 2000 --python-messages 20000)
fi
echo "== build ($profile): p2p-node, p2p-rendezvous, quinn-pipe, p2p-bench, rendezvous-load" >&2
cargo build "${cargo_profile[@]}" -p p2pnat -p p2p-rendezvous -p p2pnat-bench --bins >&2
bin=$target/$profile

# dumbpipe 0.40.1 from crates.io, into the target directory (never vendored).
dumbpipe=$target/bench-tools/bin/dumbpipe
if [[ $skip == *" dumbpipe "* ]]; then
  note "dumbpipe skipped (BENCH_SKIP)"; dumbpipe=
elif [ -x "$dumbpipe" ] && "$dumbpipe" --version 2>/dev/null | grep -q '0\.40\.1'; then
  :
elif [ "$mode" = smoke ]; then
  note "dumbpipe not installed; smoke runs do not build it (a full run installs it: cargo install --locked --root $target/bench-tools dumbpipe@0.40.1)"
  dumbpipe=
else
  echo "== cargo install --locked --root $target/bench-tools dumbpipe@0.40.1" >&2
  if ! cargo install --locked --root "$target/bench-tools" --target-dir "$target/bench-tools/build" dumbpipe@0.40.1 >&2; then
    note "dumbpipe 0.40.1 could not be installed from crates.io (offline?): its column is empty"
    dumbpipe=
  fi
fi

# quinn's own perf tool (quinn-rs/quinn perf/): not published on crates.io (only the quinn,
# quinn-proto, quinn-udp library crates are), so `cargo install` cannot build it from there.
note "quinn's perf tool is not built: it is not published on crates.io (cargo info quinn-perf: not found; it lives in the quinn repository's perf/ folder), and the issue allows crates.io only; quinn-pipe (bench/src/bin/quinn_pipe.rs) is the in-repo quinn ceiling"

# A network namespace holding only lo.
ns=()
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
  ns=(unshare -n)
elif command -v unshare >/dev/null && unshare -rn true 2>/dev/null; then
  ns=(unshare -rn)
fi
if [ ${#ns[@]} -eq 0 ] && [ -n "$dumbpipe" ]; then
  note "no private network namespace available (unshare): dumbpipe skipped, as its defaults reach n0's public relays"
  dumbpipe=
fi

args=(--node "$bin/p2p-node" --rendezvous "$bin/p2p-rendezvous" --pipe "$bin/quinn-pipe"
      --rounds "$rounds" --bulk-mib "$bulk" "${sizes[@]}" --out "$out" --label "$mode, $profile build")
[ -n "$dumbpipe" ] && args+=(--dumbpipe "$dumbpipe")
if [[ $skip != *" python "* ]]; then args+=(--python-script bench/python_json.py); else note "Python skipped (BENCH_SKIP)"; fi
for a in ${BENCH_NODE_ARGS:-}; do args+=(--node-arg "$a" --pipe-arg "$a"); done
# p2p-node variants measured in the same rounds (NAME=ARGS;NAME=ARGS): the alternatives to
# today's defaults, so that before/after is always one interleaved run.
if [ "$mode" = full ]; then
  variants=${BENCH_NODE_VARIANTS-"cubic=--congestion cubic;window-1.25MB=--flow-window 1250000"}
else
  variants=${BENCH_NODE_VARIANTS-}
fi
IFS=';' read -r -a variant_list <<<"$variants"
for v in "${variant_list[@]}"; do [ -n "$v" ] && args+=(--node-variant "$v"); done

includes=()
# Long link in the NAT lab (root only; netsim runs one at a time under /tmp/netsim.lock).
if [ -f "$out/longlink.json" ]; then rm -f "$out/longlink.json"; fi
if [ "$mode" = full ] && [[ $skip != *" netsim "* ]]; then
  if [ "$(id -u)" = 0 ]; then
    if ! command -v iperf3 >/dev/null; then ./scripts/install-deps.sh >&2 || true; fi
    cargo build --release -p p2pnat-netsim >&2
    echo "== netsim long link (flock /tmp/netsim.lock)" >&2
    if flock /tmp/netsim.lock "$target/release/netsim" longlink --node-bin "$bin/p2p-node" \
        --rendezvous-bin "$bin/p2p-rendezvous" --out "$out/longlink" >&2; then
      cp "$out/longlink/longlink.json" "$out/longlink.json"
      includes+=(--include "$out/longlink.json")
    else
      note "netsim longlink failed; see $out/longlink"
    fi
  else
    note "netsim long-link figures skipped: they need root (network namespaces); run scripts/bench.sh as root"
  fi
fi
# Rendezvous at 10k and 100k registered peers.
if [ "$mode" = full ] && [[ $skip != *" rendezvous "* ]] && [ -x "$bin/rendezvous-load" ]; then
  echo "== rendezvous load" >&2
  if "${ns[@]}" sh -c 'ip link set lo up 2>/dev/null; exec "$@"' sh "$bin/rendezvous-load" \
      --rendezvous "$bin/p2p-rendezvous" --peers 10000,100000 --out "$out/rendezvous.json" >&2; then
    includes+=(--include "$out/rendezvous.json")
  else
    note "rendezvous load failed"
  fi
fi
[ -s "$out/notes.md" ] && args+=(--include-notes "$out/notes.md")

echo "== p2p-bench: $rounds round(s), ${bulk} MiB bulk" >&2
if [ ${#ns[@]} -gt 0 ]; then
  "${ns[@]}" sh -c 'ip link set lo up && exec "$@"' sh "$bin/p2p-bench" "${args[@]}" "${includes[@]}"
else
  "$bin/p2p-bench" "${args[@]}" "${includes[@]}"
fi
echo "bench.sh: wrote $out/bench.md, $out/bench.json, $out/bench.svg" >&2
