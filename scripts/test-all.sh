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
if [ -d python/tests ]; then
  echo "== pytest (python wrappers)"
  python3 -m pytest -q python/tests
fi
