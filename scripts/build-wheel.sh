#!/usr/bin/env bash
# Builds the p2pnat wheel: the Python package p2pnat plus the p2p-node and p2p-rendezvous
# executables, so `pip install <wheel>` needs no Rust. Needs Rust and maturin (scripts/install-deps.sh).
#
#   scripts/build-wheel.sh [--profile release|dev|<cargo profile>] [--out DIR]
#
# Defaults: --profile release (what to distribute), --out <cargo target dir>/wheels. Prints the
# wheel's path as its last line. CI (scripts/check-wheel.sh) uses --profile dev to reuse the debug
# build test-all.sh already made.
#
# Why a script and not a bare `maturin build`: maturin's `bin` bindings package the binaries of one
# cargo package, and the two executables live in two workspace packages (p2p-node in the root
# package, p2p-rendezvous in rendezvous/, which depends on the root one). So maturin builds p2p-node
# itself, and this script first builds p2p-rendezvous with the same profile and stages it in
# python/wheel-data/scripts/, maturin's wheel-data directory (pyproject.toml `data`), which lands in
# the same `p2pnat-<version>.data/scripts/` as p2p-node. The staging directory is emptied before
# and removed after every build, so no stale binary can slip into a later wheel, and the wheel is
# checked to hold both executables before the script succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

profile=release
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build-wheel: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

python3 -m maturin --version >/dev/null 2>&1 || {
  echo "build-wheel: maturin is missing: run scripts/install-deps.sh (or: python3 -m pip install 'maturin>=1.5,<2')" >&2
  exit 1
}

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
case "$profile" in
  dev|test) profile_dir=debug ;;
  bench) profile_dir=release ;;
  *) profile_dir=$profile ;;
esac
out=${out:-$target_dir/wheels}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The staging directory is shared by every build in this checkout: one at a time.
if command -v flock >/dev/null 2>&1; then
  mkdir -p "$target_dir"
  exec 9>"$target_dir/.build-wheel.lock"
  flock 9
fi
stage=$root/python/wheel-data
cleanup() { rm -rf "$stage"; }
trap cleanup EXIT
cleanup

echo "build-wheel: cargo build --profile $profile -p p2p-rendezvous" >&2
cargo build --profile "$profile" -p p2p-rendezvous --bin p2p-rendezvous
mkdir -p "$stage/scripts"
cp "$target_dir/$profile_dir/p2p-rendezvous" "$stage/scripts/p2p-rendezvous"
chmod 755 "$stage/scripts/p2p-rendezvous"

# maturin writes the wheel into $out; take the one it names (an older wheel of the same version
# and tag in $out is overwritten).
log=$(mktemp)
echo "build-wheel: maturin build --profile $profile" >&2
(cd python && python3 -m maturin build --profile "$profile" --out "$out" 2>&1) | tee "$log" >&2
wheel=$(sed -n 's/.*Built wheel.* to \(.*\.whl\).*/\1/p' "$log" | tail -1)
rm -f "$log"
[ -n "$wheel" ] && [ -f "$wheel" ] || { echo "build-wheel: maturin named no wheel" >&2; exit 1; }

# maturin's auditwheel step chose the platform tag (manylinux_X_Y: oldest glibc) from p2p-node only;
# the staged p2p-rendezvous must not need a newer glibc than the tag promises.
python3 - "$wheel" "$stage/scripts/p2p-rendezvous" <<'PY'
import re, shutil, stat, subprocess, sys, zipfile
wheel, rendezvous = sys.argv[1], sys.argv[2]
tag = re.search(r"manylinux_(\d+)_(\d+)", wheel)
if tag and shutil.which("objdump"):
    syms = subprocess.run(["objdump", "-T", rendezvous], capture_output=True, text=True, check=True).stdout
    need = max((tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([\d.]+)", syms)), default=(0,))
    if need > (int(tag[1]), int(tag[2])):
        sys.exit(f"build-wheel: p2p-rendezvous needs glibc {need}, newer than the wheel's tag {tag[0]}")
elif tag:
    print("build-wheel: objdump missing: p2p-rendezvous's glibc needs not checked against the tag", file=sys.stderr)
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    for exe in ("p2p-node", "p2p-rendezvous"):
        hits = [n for n in names if n.split("/")[-2:] == ["scripts", exe] and ".data/" in n]
        if len(hits) != 1:
            sys.exit(f"build-wheel: {wheel} does not hold exactly one .data/scripts/{exe}: {hits}")
        mode = zf.getinfo(hits[0]).external_attr >> 16
        if not mode & stat.S_IXUSR:
            sys.exit(f"build-wheel: {hits[0]} is not executable in the wheel (mode {oct(mode)})")
    if "p2pnat/binary.py" not in names:
        sys.exit(f"build-wheel: {wheel} lacks the p2pnat package")
PY
echo "$wheel"
