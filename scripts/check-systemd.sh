#!/usr/bin/env bash
# Runs p2p-rendezvous under packaging/p2p-rendezvous.service with a real systemd as PID 1, and
# checks it as an operator would (scripts/check-systemd-inside.sh, run inside: enable --now,
# is-active, the key in the DynamicUser's StateDirectory, /healthz and /metrics, a p2p-node
# registering, restart with the same peer ID, JSON lines in the journal, a clean stop).
#
# How: systemd-nspawn boots the host's own /usr (--volatile=yes: / is a fresh tmpfs, /usr the
# host's, read-only) in a private network namespace (loopback only: nothing leaves the machine),
# with the unit, the example config (log-format json), the two debug binaries and the check
# bind-mounted in. The check's exit status becomes the container's (systemctl exit). Root only;
# needs systemd-nspawn (Debian: systemd-container), curl, /usr/bin/python3 with
# python3-prometheus-client (scripts/install-deps.sh installs them). Takes about 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=$(realpath "${CARGO_TARGET_DIR:-target}/debug")
die() { echo "check-systemd: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (systemd-nspawn boots a container)"
command -v systemd-nspawn >/dev/null 2>&1 \
  || die "systemd-nspawn missing: scripts/install-deps.sh installs systemd-container"
command -v curl >/dev/null 2>&1 || die "curl missing (scripts/install-deps.sh installs it)"
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null \
  || die "/usr/bin/python3 cannot import prometheus_client: apt-get install python3-prometheus-client"
for b in p2p-rendezvous p2p-node; do
  [ -x "$bin/$b" ] || die "$bin/$b missing: cargo build --workspace --bins first"
done

tmp=$(mktemp -d /tmp/p2pnat-systemd.XXXXXX)
pid=""
cgroups=()
cleanup() {
  set +e
  # Whatever is left in the cgroups made below was started by this script (systemd-nspawn and
  # the container); then `timeout` ($pid), its child gone, exits too.
  local cg i
  for cg in "${cgroups[@]}"; do
    [ -d "$cg" ] || continue
    for i in 1 2 3 4 5 6 7 8 9 10; do
      find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$cg" ] || break
      sleep 0.2
    done
    [ -d "$cg" ] && echo "check-systemd: could not remove the cgroup $cg" >&2
  done
  [ -n "$pid" ] && { kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The container gets cgroups of its own below ours (nspawn --keep-unit puts its "payload" and
# "supervisor" there), so that two runs do not meet and everything is removed afterwards.
name=p2pnat-check-$$
own_v2=$(sed -n 's/^0:://p' /proc/self/cgroup)
own_v1=$(sed -n 's/^[0-9]*:name=systemd://p' /proc/self/cgroup)
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  cgroups=("/sys/fs/cgroup${own_v2%/}/$name")
else
  [ -d /sys/fs/cgroup/systemd ] && cgroups+=("/sys/fs/cgroup/systemd${own_v1%/}/$name")
  [ -d /sys/fs/cgroup/unified ] && cgroups+=("/sys/fs/cgroup/unified${own_v2%/}/$name")
fi
[ ${#cgroups[@]} -gt 0 ] || die "no cgroup hierarchy for systemd under /sys/fs/cgroup"
mkdir "${cgroups[@]}"

# The operator's files: the example config as shipped, with JSON logs.
sed 's/^log-format = "text"$/log-format = "json"/' packaging/rendezvous.toml >"$tmp/rendezvous.toml"
grep -qx 'log-format = "json"' "$tmp/rendezvous.toml" \
  || die 'packaging/rendezvous.toml has no line log-format = "text" to change'
# Nothing else is enabled at first boot (Debian presets enable every installed service).
echo 'disable *' >"$tmp/check.preset"
cat >"$tmp/p2pnat-check.service" <<'EOF'
[Unit]
Description=p2pnat: scripts/check-systemd-inside.sh
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/p2pnat-check/inside.sh
EOF
mkdir "$tmp/out"

echo "-- booting systemd in a container (systemd-nspawn, private network) to run the unit"
start=$(date +%s)
# A private mount namespace with a fresh tmpfs on /run: nspawn's own directories there
# (systemd/nspawn-root, systemd/nspawn/propagate) must not land on the host's /run, which here is
# not a tmpfs (nspawn refuses to remove them from a disk), and /run/systemd may not exist.
# shellcheck disable=SC2016
CGROUPS="${cgroups[*]}" timeout -k 10 120 unshare --mount --propagation private -- bash -c '
  for cg in $CGROUPS; do echo $$ >"$cg/cgroup.procs"; done
  mount -t tmpfs -o mode=0755 tmpfs /run
  exec "$@"' _ systemd-nspawn --quiet --directory=/ --volatile=yes --register=no --keep-unit \
  --console=pipe --private-network --machine="$name" \
  --tmpfs=/usr/local/bin \
  --bind-ro="$bin/p2p-rendezvous:/usr/local/bin/p2p-rendezvous" \
  --bind-ro="$bin/p2p-node:/usr/local/bin/p2p-node" \
  --bind-ro="$tmp/rendezvous.toml:/etc/p2pnat/rendezvous.toml" \
  --bind-ro="$root/packaging/p2p-rendezvous.service:/etc/systemd/system/p2p-rendezvous.service" \
  --bind-ro="$tmp/check.preset:/etc/systemd/system-preset/00-p2pnat-check.preset" \
  --bind-ro="$tmp/p2pnat-check.service:/etc/systemd/system/p2pnat-check.service" \
  --bind-ro="$root/scripts/check-systemd-inside.sh:/p2pnat-check/inside.sh" \
  --bind="$tmp/out:/p2pnat-check/out" \
  --boot systemd.unit=multi-user.target systemd.wants=p2pnat-check.service \
  systemd.mask=systemd-firstboot.service \
  </dev/null >"$tmp/nspawn.log" 2>&1 &
pid=$!
wait "$pid" && rc=0 || rc=$?
pid=""
cat "$tmp/out/log" 2>/dev/null || echo "(the check wrote no log)"
if [ "$rc" != 0 ] || ! grep -qx 'check-systemd-inside: ok' "$tmp/out/log" 2>/dev/null; then
  echo "---- systemd-nspawn output (exit status $rc; 124: timed out)"
  cat "$tmp/nspawn.log"
  echo "---- the container's journal, last 60 lines"
  tail -60 "$tmp/out/journal" 2>/dev/null || echo "(none)"
  die "the service did not pass under systemd (exit status $rc)"
fi
echo "check-systemd: ok ($(($(date +%s) - start)) s: booted, checked, shut down)"
