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
echo "== cargo test"
cargo test --workspace
echo "== pytest (python wrappers, real binaries on loopback)"
python3 -m pytest -q python/tests
echo "== wheel (dev profile, reusing the build above): fresh venv outside the checkout, README example"
./scripts/check-wheel.sh dev
if [ "$(id -u)" = 0 ]; then
  echo "== netsim check and matrix (root: NAT lab in network namespaces)"
  target/debug/netsim check
  target/debug/netsim matrix --out reports/netsim
else
  echo "== netsim skipped: it needs root (network namespaces and nftables); run this script as root"
fi
