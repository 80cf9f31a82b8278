# Runs on the device over SSH (sent as `sh -c`, with remote_common.sh in place of the @COMMON@ line).
# Under the device lock: point `current` at the newest complete release older than the current one, after
# checking it (marker, files, artifact hashes, runtime importable); refuses and changes nothing otherwise.
# With a service (ROOT/service.conf), the switch is health-gated as in remote_deploy.sh: the service restarts on
# the older release and must answer /health, else the newer one is made current (and restarted) again.
# Args: ROOT LOCK_WAIT
# Exit codes: 0 switched (prints the release id), 2 bad arguments, 4 nothing to roll back to (or it failed its
#   checks), 6 lock busy, 9 health gate failed (the release that was current is current again).
set -eu
root=$1 lock_wait=$2
case $lock_wait in ""|*[!0-9]*) echo "bad number ${lock_wait}" >&2; exit 2 ;; esac
cd -- "$root" 2>/dev/null || { echo "no edgeport releases under $root on this device" >&2; exit 4; }
#@COMMON@
cur=$(readlink current 2>/dev/null || true)
[ -n "$cur" ] || { echo "no current release under $root" >&2; exit 4; }
prev=""
for d in $(ls -1d releases/* 2>/dev/null | sort); do
    [ "$d" = "$cur" ] && break
    [ -e "$d/.complete" ] && prev=$d
done
[ -n "$prev" ] || { echo "no complete release older than ${cur#releases/} to roll back to" >&2; exit 4; }
if ! why=$(verify_release "$prev" 2>&1); then
    echo "release ${prev#releases/} failed its checks ($(echo "$why" | tail -n 1)), so ${cur#releases/} stays" \
         "current; deploy a bundle again instead (edgeport deploy)" >&2
    exit 4
fi
gated=0
gated_switch "$prev" || gated=$?
[ "$gated" = 0 ] || exit "$gated"
echo "${prev#releases/}"
