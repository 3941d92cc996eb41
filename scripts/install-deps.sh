#!/usr/bin/env bash
# Installs everything the build and the tests need. Safe to run again.
# - Rust toolchain: expected on the machine (rustup); rustfmt and clippy components are added.
# - nftables + iproute2 + conntrack: the netsim lab (root only; skipped otherwise; conntrack
#   makes lab NATs forget their mappings for the NAT rebinding cell).
# - coturn: turnutils_uclient / turnutils_peer for tests/turn_interop.rs (root only). Its
#   turnserver daemon is left stopped and disabled: it would take UDP 3478.
# - iperf3: the TCP reference of scripts/bench.sh's long-link figures (netsim longlink; root only).
# - Python: pytest, msgpack, cbor2 for the wrapper tests; maturin builds the wheel
#   (scripts/build-wheel.sh); python3-pip and python3-venv (root only, when pip is missing or
#   `python3 -m venv` fails, as on a fresh Debian/Ubuntu) let scripts/check-wheel.sh install the
#   wheel into a fresh venv.
# - systemd (root only, when systemd-analyze is missing): scripts/check-packaging.sh.
# - systemd-container (systemd-nspawn), curl and Debian's python3-prometheus-client (root only):
#   scripts/check-systemd.sh runs the rendezvous under its unit with systemd as PID 1 in a
#   container that sees only the host's /usr (so the metrics parser must come from apt, not pip).
# - Fuzzing (scripts/fuzz.sh, docs/FUZZING.md): the nightly toolchain (minimal profile) and
#   cargo-fuzz, pinned; each only when missing.
set -euo pipefail
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || echo "install-deps: could not add rustfmt/clippy components" >&2
fi
CARGO_FUZZ_VERSION=0.13.2
if command -v rustup >/dev/null 2>&1 && ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal >/dev/null 2>&1 \
    || echo "install-deps: could not install the nightly toolchain (scripts/fuzz.sh needs it)" >&2
fi
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet >/dev/null 2>&1 \
    || echo "install-deps: could not install cargo-fuzz $CARGO_FUZZ_VERSION (scripts/fuzz.sh needs it)" >&2
fi
if [ "$(id -u)" = 0 ]; then
  need=()
  command -v nft >/dev/null 2>&1 || need+=(nftables)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
  command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
  # systemd-analyze: scripts/check-packaging.sh verifies packaging/p2p-rendezvous.service.
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  /usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3-prometheus-client)
  command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  # Debian's python3 without python3-venv imports ensurepip but cannot make a venv: try one.
  venv_probe=$(mktemp -d)
  python3 -m venv "$venv_probe/v" >/dev/null 2>&1 || need+=(python3-venv)
  rm -rf "$venv_probe"
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
# A Python that marks itself externally managed (PEP 668: Debian's and Ubuntu's own python3) refuses
# plain `pip install`; then install beside its packages with --break-system-packages (user-level
# tools only: pytest, two codecs, maturin). A failure is reported, not fatal, as before: the step
# that needs the package says what is missing.
pip_install() {
  local out
  if ! out=$(python3 -m pip install -q --disable-pip-version-check "$@" 2>&1); then
    if grep -q externally-managed-environment <<<"$out"; then
      out=$(python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@" 2>&1) \
        || { echo "install-deps: pip install $* failed:" >&2; echo "$out" >&2; return 0; }
    else
      echo "install-deps: pip install $* failed:" >&2; echo "$out" >&2; return 0
    fi
  fi
  grep -v "Running pip as the 'root' user" <<<"$out" || true
}
pip_install pytest msgpack cbor2 'maturin>=1.5,<2'
