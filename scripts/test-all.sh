#!/usr/bin/env bash
# The README's test command: every check CI runs, in order of speed.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (binaries used by the integration tests)"
cargo build --workspace --bins
echo "== packaging: systemd unit (systemd-analyze), example config, Containerfile"
./scripts/check-packaging.sh
echo "== cargo test"
cargo test --workspace
echo "== fuzz smoke: every fuzz target a few seconds from its corpus (nightly; docs/FUZZING.md)"
./scripts/fuzz.sh smoke
echo "== the README's quick start: scripts/demo.sh, checked by what it must show"
demo_out=$(mktemp)
if ! ./scripts/demo.sh >"$demo_out" 2>&1 \
  || ! grep -q '^\[alice\] recv .* Hi Alice!' "$demo_out" \
  || ! grep -q '^\[client\] reply: Hello from the Python client' "$demo_out"; then
  cat "$demo_out"
  echo "demo.sh did not show alice receiving bob's message and the Python client's reply" >&2
  rm -f "$demo_out"
  exit 1
fi
rm -f "$demo_out"
echo "== pytest (python wrappers, real binaries on loopback)"
python3 -m pytest -q python/tests
echo "== scripts/bench.sh smoke: every benchmark runs once, tiny sizes (figures reported, never asserted)"
./scripts/bench.sh smoke
echo "== wheel (dev profile, reusing the build above): fresh venv outside the checkout, README example"
./scripts/check-wheel.sh dev
if [ "$(id -u)" = 0 ]; then
  echo "== systemd: p2p-rendezvous under packaging/p2p-rendezvous.service, systemd as PID 1 (nspawn)"
  ./scripts/check-systemd.sh
  echo "== netsim check, netcheck, flood and matrix (root: NAT lab in network namespaces)"
  target/debug/netsim check
  target/debug/netsim netcheck --out reports/netsim
  # A public rendezvous under 1,000 throw-away clients from many lab addresses and from
  # behind the lab's NATs, while two real nodes meet through it (about 15 s).
  target/debug/netsim flood --out reports/netsim/flood
  target/debug/netsim matrix --out reports/netsim
else
  echo "== netsim and the systemd check skipped: they need root (namespaces, nftables, systemd-nspawn)"
fi
