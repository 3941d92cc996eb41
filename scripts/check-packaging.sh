#!/usr/bin/env bash
# Checks packaging/ and the Containerfile statically (scripts/test-all.sh runs it after the build;
# scripts/check-systemd.sh then runs the unit under a real systemd, as root):
# - the systemd unit passes `systemd-analyze verify` with no warning, and its sandbox scores
#   at most 2.5 on `systemd-analyze security --offline` (0 best, 10 worst); without
#   systemd-analyze it says so loudly and only parses the unit;
# - packaging/rendezvous.toml is a config the real binary accepts (--print-config);
# - the Containerfile's stages, COPY sources and binary exist (it is built only if a container
#   engine answers; CI machines have none).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug/p2p-rendezvous
unit=packaging/p2p-rendezvous.service
[ -x "$bin" ] || { echo "check-packaging: $bin missing: cargo build --workspace --bins first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- example config: p2p-rendezvous --config packaging/rendezvous.toml --print-config"
"$bin" --config packaging/rendezvous.toml --print-config >"$tmp/effective.toml"
grep -q '^metrics-listen = "127.0.0.1:9478"$' "$tmp/effective.toml"

echo "-- systemd unit: $unit"
# Every line is a comment, a [Section] or Key=Value (also checked when systemd-analyze runs).
if grep -nvE '^(#.*|\[(Unit|Service|Install)\]|[A-Za-z]+=.*|)$' "$unit"; then
  echo "check-packaging: the lines above are not unit syntax" >&2; exit 1
fi
for key in DynamicUser=yes NoNewPrivileges=yes ProtectSystem=strict StateDirectory=p2pnat \
  'ExecStart=/usr/local/bin/p2p-rendezvous --config /etc/p2pnat/rendezvous.toml'; do
  grep -qxF "$key" "$unit" || { echo "check-packaging: $unit lacks $key" >&2; exit 1; }
done
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at the one just built.
  sed "s|^ExecStart=/usr/local/bin/p2p-rendezvous|ExecStart=$(realpath "$bin")|" "$unit" \
    >"$tmp/p2p-rendezvous.service"
  # It exits 0 on most mistakes (an unknown key, a bad value): any output is a failure.
  if ! systemd-analyze verify "$tmp/p2p-rendezvous.service" >"$tmp/verify.out" 2>&1 \
    || [ -s "$tmp/verify.out" ]; then
    cat "$tmp/verify.out" >&2
    echo "check-packaging: systemd-analyze verify complained about $unit" >&2; exit 1
  fi
  systemd-analyze security --offline=yes --threshold=25 "$tmp/p2p-rendezvous.service" \
    | tail -1
else
  echo "!!!!!!!! check-packaging: systemd-analyze is MISSING: the unit was only parsed, NOT" >&2
  echo "!!!!!!!! verified (scripts/install-deps.sh installs the systemd package as root)" >&2
fi

echo "-- Containerfile"
grep -qE '^FROM .* AS build$' Containerfile
[ "$(grep -c '^FROM ' Containerfile)" = 2 ]
grep -qE '^COPY --from=build /src/target/release/p2p-rendezvous ' Containerfile
grep -q '^name = "p2p-rendezvous"$' rendezvous/Cargo.toml
grep -E '^COPY ' Containerfile | grep -v -- '--from=' | awk '{print $2}' | while read -r src; do
  [ -e "$src" ] || { echo "check-packaging: Containerfile copies $src, which does not exist" >&2; exit 1; }
done
grep -qx target .dockerignore
engine=""
for e in podman docker; do
  if command -v "$e" >/dev/null 2>&1 && timeout 10 "$e" info >/dev/null 2>&1; then engine=$e; break; fi
done
if [ -n "$engine" ] && [ "${CHECK_CONTAINER_BUILD:-0}" = 1 ]; then
  "$engine" build -f Containerfile -t p2p-rendezvous:check .
else
  echo "-- Containerfile checked, not built (no container engine answers, or CHECK_CONTAINER_BUILD=1 unset)"
fi
echo "check-packaging: ok"
