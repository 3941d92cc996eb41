#!/usr/bin/env bash
# Runs inside the container scripts/check-systemd.sh boots, as root with systemd as PID 1: does
# what an operator does with packaging/p2p-rendezvous.service and checks each answer. Its exit
# status ends the container (systemctl exit) and becomes check-systemd.sh's verdict.
set -euo pipefail
shopt -s inherit_errexit
exec >/p2pnat-check/out/log 2>&1
finished=no
finish() {
  local rc=$?
  [ "$rc" = 0 ] && [ "$finished" = no ] && rc=1
  journalctl -b --no-pager -o short-monotonic >/p2pnat-check/out/journal 2>&1 || true
  if [ "$rc" = 0 ]; then echo "check-systemd-inside: ok"; else echo "check-systemd-inside: FAILED"; fi
  # Last: systemd stops this unit (SIGTERM to all in it) as soon as the exit job is queued.
  exec systemctl --no-block exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM
fail() { echo "!! $*" >&2; exit 1; }
unit=p2p-rendezvous
metrics=http://127.0.0.1:9478
key=/var/lib/p2pnat/rendezvous.key

healthy_within_10s() {
  local _
  for _ in $(seq 100); do
    [ "$(curl -fsS --max-time 1 "$metrics/healthz" 2>/dev/null)" = ok ] && return 0
    systemctl -q is-failed "$unit" && break
    sleep 0.1
  done
  systemctl status "$unit" --no-pager || true
  fail "$metrics/healthz did not answer ok ($unit: $(systemctl is-active "$unit"))"
}

# Every line the service wrote to the journal, each one parsed as JSON; prints the peer IDs its
# "rendezvous listening" events name, once the journal holds $1 of them (waits up to 5 s).
logged_ids() {
  local _ ids
  for _ in $(seq 50); do
    ids=$(journalctl "_SYSTEMD_UNIT=$unit.service" -o cat --no-pager | /usr/bin/python3 -c '
import json, sys
lines = sys.stdin.read().splitlines()
for n, line in enumerate(lines, 1):
    try:
        event = json.loads(line)
    except ValueError as e:
        sys.exit(f"journal line {n} of {len(lines)} is not JSON ({e}): {line!r}")
    fields = event["fields"]
    if fields["message"] == "rendezvous listening":
        print(fields["id"])') || fail "the service wrote a line that is not JSON to the journal"
    [ "$(grep -c . <<<"$ids")" -ge "$1" ] && { echo "$ids"; return 0; }
    sleep 0.1
  done
  fail "the journal holds $(grep -c . <<<"$ids") 'rendezvous listening' events, not $1"
}

pid1=$(cat /proc/1/comm)
[ "$pid1" = systemd ] || fail "PID 1 is $pid1, not systemd"
echo "-- PID 1: $pid1 ($(systemctl --version | sed -n 1p)); system state: $(systemctl is-system-running || true)"
echo "-- systemctl enable --now $unit"
systemctl enable --now "$unit"
healthy_within_10s
state=$(systemctl is-active "$unit") || fail "systemctl is-active: $state"
echo "is-active: $state; healthz: ok (metrics-listen comes from /etc/p2pnat/rendezvous.toml)"
systemctl status "$unit" --no-pager --lines=0 | sed -n '1,5p'

echo "-- who it runs as, and its key in the StateDirectory"
pid=$(systemctl show -P MainPID "$unit")
uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$pid/status")
[ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] || fail "runs as uid $uid, not a dynamic user"
[ "$(readlink /var/lib/p2pnat)" = private/p2pnat ] || fail "/var/lib/p2pnat is not DynamicUser's link"
[ "$(stat -c '%u %a' "$key")" = "$uid 600" ] || fail "$key: $(stat -c 'owner %u mode %a' "$key")"
[ "$(stat -c '%u %a' /var/lib/private/p2pnat)" = "$uid 700" ] || fail "state directory owner/mode"
id=$(logged_ids 1)
[ "$(p2p-node id --identity "$key")" = "$id" ] || fail "$key is not the key of peer $id"
key_hash=$(sha256sum <"$key")
echo "uid $uid (dynamic), $key mode 600, peer ID $id"
timeout 2 bash -c '</dev/tcp/127.0.0.1/443' || fail "nothing listens on TCP 443 (the TLS port)"
echo "TLS port 443 bound by the unprivileged user (AmbientCapabilities=CAP_NET_BIND_SERVICE)"

echo "-- a p2p-node registers, the metrics count it"
mkfifo /tmp/node.in
p2p-node --rendezvous "$id@127.0.0.1:3478" --identity /tmp/node.key \
  </tmp/node.in >/tmp/node.out 2>/tmp/node.err &
node=$!
exec 3>/tmp/node.in
for _ in $(seq 100); do grep -q '^ready ' /tmp/node.out && break; sleep 0.1; done
ready=$(grep '^ready ' /tmp/node.out) || { cat /tmp/node.err; fail "p2p-node printed no ready line"; }
echo "$ready"
grep -q ' observed=127\.0\.0\.1:[0-9]' <<<"$ready" || fail "the ready line shows no observed=127.0.0.1:PORT"
curl -fsS --max-time 2 "$metrics/metrics" | /usr/bin/python3 -c '
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = {s.name: s.value for f in text_string_to_metric_families(sys.stdin.read())
           for s in f.samples if not s.labels}
regs = samples.get("p2pnat_rendezvous_registrations_total")
peers = samples.get("p2pnat_rendezvous_registered_peers")
print(f"metrics (OpenMetrics, parsed): registrations_total {regs}, registered_peers {peers}")
if not regs or regs < 1 or peers != 1:
    sys.exit("expected at least 1 registration and exactly 1 registered peer")'
echo quit >&3
exec 3>&-
timeout 10 tail --pid="$node" -f /dev/null || fail "p2p-node did not exit on quit"

echo "-- systemctl restart $unit: same key, same peer ID"
systemctl restart "$unit"
healthy_within_10s
state=$(systemctl is-active "$unit") || fail "systemctl is-active after restart: $state"
ids=$(logged_ids 2)
[ "$(sort -u <<<"$ids")" = "$id" ] || fail "peer IDs across the restart: $(echo $ids)"
[ "$(sha256sum <"$key")" = "$key_hash" ] || fail "$key changed across the restart"
echo "is-active: $state; peer ID after restart: $id (key unchanged)"

echo "-- systemctl stop $unit: a clean exit"
systemctl stop "$unit"
state=$(systemctl is-active "$unit") && fail "still active after stop"
[ "$state" = inactive ] || fail "after stop: $state"
show=$(systemctl show "$unit" -p Result -p ExecMainCode -p ExecMainStatus -p NRestarts)
echo "is-active: $state;" $show
# ExecMainCode=1: it exited by itself (with status 0) on SIGTERM, was not killed.
grep -qx Result=success <<<"$show" && grep -qx ExecMainCode=1 <<<"$show" \
  && grep -qx ExecMainStatus=0 <<<"$show" && grep -qx NRestarts=0 <<<"$show" \
  || fail "not a clean stop"
# One "shutting down" a stop (restart, then stop); journald may still be writing the last.
for _ in $(seq 50); do
  log=$(journalctl "_SYSTEMD_UNIT=$unit.service" -o cat --no-pager)
  [ "$(grep -c '"message":"shutting down"' <<<"$log")" = 2 ] && break
  sleep 0.1
done
[ "$(grep -c '"message":"shutting down"' <<<"$log")" = 2 ] || fail "not 2 'shutting down' lines"
if grep '"level":"ERROR"' <<<"$log"; then fail "the service logged the errors above"; fi
echo "-- the journal: every line the service wrote is JSON"
logged_ids 2 >/dev/null
echo "journalctl _SYSTEMD_UNIT=$unit.service -o cat:" \
  "$(journalctl "_SYSTEMD_UNIT=$unit.service" -o cat --no-pager | wc -l) lines, all JSON;" \
  "journalctl -u $unit adds systemd's own lines about the unit:"
journalctl -u "$unit" -o cat --no-pager | sed -n 1,3p
finished=yes
