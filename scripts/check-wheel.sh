#!/usr/bin/env bash
# CI check of the wheel (scripts/test-all.sh runs it): what `pip install p2pnat` gives a machine
# without Rust.
#   1. scripts/build-wheel.sh --profile dev (reuses the debug build test-all.sh made; pass
#      `release` as $1 to check the distributable wheel instead);
#   2. installs it with pip into a fresh venv under a mktemp dir, outside the checkout;
#   3. there, with a bare environment (no P2P_*_BIN, PATH = the venv's bin + /usr/bin:/bin), asserts
#      that p2pnat finds both executables through its bundled step, inside that venv;
#   4. starts p2p-rendezvous as p2pnat finds it and runs the README's Python example (the code block
#      after the `wheel-example` marker in README.md) against it: it must print the echoed message;
#   5. negative control: the same wheel with p2p-node deleted, installed in a second venv, must fail
#      step 3's check, so the check above cannot pass without the binary in the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
profile=${1:-dev}

work=$(mktemp -d "${TMPDIR:-/tmp}/p2pnat-wheel.XXXXXX")
rv_pid=
cleanup() {
  if [ -n "$rv_pid" ]; then kill "$rv_pid" 2>/dev/null || true; wait "$rv_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
case "$work" in "$root"/*) echo "check-wheel: $work is inside the checkout" >&2; exit 1 ;; esac

wheel=$(scripts/build-wheel.sh --profile "$profile" --out "$work/dist" | tail -1)
echo "check-wheel: built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"

# A bare environment: nothing from the checkout, no override, no cargo dir on PATH.
bare() { local venv=$1; shift; env -i HOME="$work/home" LANG=C.UTF-8 PATH="$venv/bin:/usr/bin:/bin" "$@"; }
mkdir -p "$work/home" "$work/run"

install_into() {
  python3 -m venv "$1"
  bare "$1" "$1/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps "$2"
}

# Prints the two paths; fails unless both are the venv's own, found through the bundled step.
locate='
import sys
from pathlib import Path
from p2pnat.binary import bundled_path, find_binary
venv_bin = Path(sys.prefix, "bin").resolve()
for name in ("p2p-node", "p2p-rendezvous"):
    found, bundled = find_binary(name), bundled_path(name)
    assert bundled is not None, f"{name}: no bundled executable in this install"
    assert Path(found) == bundled and bundled.parent == venv_bin, (found, bundled, venv_bin)
    print(found)
'
install_into "$work/venv" "$wheel"
paths=$(cd "$work/run" && bare "$work/venv" python -c "$locate")
node_bin=$(sed -n 1p <<<"$paths")
rendezvous_bin=$(sed -n 2p <<<"$paths")
echo "check-wheel: p2pnat finds $node_bin and $rendezvous_bin"
(cd "$work/run" && bare "$work/venv" python -m p2pnat)
"$node_bin" --version

# The rendezvous on loopback, on ports the kernel picks (other tests may hold 3478/3479).
(cd "$work/run" && exec "$rendezvous_bin" --listen 127.0.0.1:0 --turn-listen 127.0.0.1:0 \
  --identity "$work/run/rendezvous.key" >"$work/rendezvous.out" 2>"$work/rendezvous.log" </dev/null) &
rv_pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/rendezvous.out" ] && break
  kill -0 "$rv_pid" 2>/dev/null || break
  sleep 0.1
done
read -r word rv_addr _ <"$work/rendezvous.out" || true
if [ "${word:-}" != listening ]; then
  echo "check-wheel: p2p-rendezvous did not start:" >&2; cat "$work/rendezvous.log" >&2; exit 1
fi

# The README's example, verbatim.
awk '/<!-- wheel-example/ {m=1; next} m && /^```python/ {p=1; next} p && /^```/ {exit} p' README.md \
  >"$work/run/echo.py"
[ -s "$work/run/echo.py" ] || { echo "check-wheel: no wheel-example block in README.md" >&2; exit 1; }
if ! out=$(cd "$work/run" && bare "$work/venv" timeout 120 python echo.py "$rv_addr" 2>&1); then
  echo "check-wheel: the README example failed:" >&2; echo "$out" >&2
  echo "-- rendezvous log:" >&2; tail -20 "$work/rendezvous.log" >&2; exit 1
fi
echo "$out"
grep -qxF "echoed: {'text': 'hi'}" <<<"$out" || { echo "check-wheel: no echo in the example's output" >&2; exit 1; }

# Negative control: the same wheel without p2p-node must fail the locate check above.
python3 - "$wheel" "$work/broken" <<'PY'
import os, sys, zipfile
src, dst_dir = sys.argv[1], sys.argv[2]
os.makedirs(dst_dir)
dst = os.path.join(dst_dir, os.path.basename(src))
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
    for info in zin.infolist():
        if info.filename.endswith(".data/scripts/p2p-node"):
            continue
        data = zin.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(True) if b"/scripts/p2p-node," not in l)
        info.compress_type = zipfile.ZIP_STORED  # quick: this wheel lives for seconds
        zout.writestr(info, data)
PY
install_into "$work/venv-broken" "$work/broken/$(basename "$wheel")"
if broken=$(cd "$work/run" && bare "$work/venv-broken" python -c "$locate" 2>&1); then
  echo "check-wheel: the locate check passed for a wheel without p2p-node: it checks nothing" >&2; exit 1
fi
# ... and for the right reason (not, say, a broken install).
grep -qE 'BinaryNotFound: cannot find the p2p-node|p2p-node: no bundled executable' <<<"$broken" || {
  echo "check-wheel: the negative control failed for another reason:" >&2; echo "$broken" >&2; exit 1; }
echo "check-wheel: ok (and a wheel without p2p-node fails the check, as it must)"
