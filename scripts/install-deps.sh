#!/usr/bin/env bash
# Installs everything the build and the tests need. Safe to run again.
# - Rust toolchain: expected on the machine (rustup); rustfmt and clippy components are added.
# - nftables + iproute2 + conntrack: the netsim lab (root only; skipped otherwise; conntrack
#   makes lab NATs forget their mappings for the NAT rebinding cell).
# - coturn: turnutils_uclient / turnutils_peer for tests/turn_interop.rs (root only). Its
#   turnserver daemon is left stopped and disabled: it would take UDP 3478.
# - Python: pytest, msgpack, cbor2 for the wrapper tests.
set -euo pipefail
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || echo "install-deps: could not add rustfmt/clippy components" >&2
fi
if [ "$(id -u)" = 0 ]; then
  need=()
  command -v nft >/dev/null 2>&1 || need+=(nftables)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
  command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # Debian's coturn does not start turnserver unless /etc/default/coturn enables it; make sure
  # anyway that no daemon holds 3478.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now coturn >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/coturn ]; then
    /etc/init.d/coturn stop >/dev/null 2>&1 || true
  fi
fi
python3 -m pip install -q --disable-pip-version-check pytest msgpack cbor2 2>&1 | grep -v "Running pip as the 'root' user" || true
