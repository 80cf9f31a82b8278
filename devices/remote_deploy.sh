# Runs on the device over SSH (sent as `sh -c`, with remote_common.sh in place of the @COMMON@ line; the archive
# comes on stdin, followed later by the deploying machine's COMMIT).
# Under the device lock: removes what interrupted deploys left (incoming/ uploads, releases without .complete),
# receives and checks the archive, installs it as a new release, verifies it (artifact hashes, smoke parity,
# selection of the fastest passing artifact x backend x threads, bench), asks the deploying machine for COMMIT,
# then writes the release's .complete marker and switches `current` to it. With a service (SERVICE given now, or
# ROOT/service.conf from an earlier deploy) the switch is health-gated: the service is restarted on the new
# release and must answer /health in time, else `current` goes back to the previous release, the service is
# restarted on it, the new release loses its .complete marker (.unhealthy says why) and the script exits 9.
# Anything that stops before the switch leaves a release without .complete: never current, removed by the next
# deploy. Pruning (after a healthy switch) keeps `current` and the newest KEEP complete releases.
# Args: ROOT RELEASE_ID SHA256 SIZE THREADS KEEP LOCK_WAIT [SERVICE [UNIT]]
#   THREADS: the profile's cores (smoke runs with them; the selection measures 1..THREADS).
#   SERVICE: "" (keep ROOT/service.conf as it is, if any) or "MODE NAME HOST PORT HEALTH_TIMEOUT TOKEN_FILE" with
#   MODE systemd-user | systemd-system | process and TOKEN_FILE '-' for none; UNIT: the systemd unit text for
#   systemd modes (devices/service.py).
# Exit codes: 0 switched (prints the release id last), 2 bad arguments, 3 smoke parity failed, 5 no COMMIT,
#   6 lock busy, 7 bad upload, 8 failed checks, 9 health gate failed (previous release current again),
#   10 no artifact qualifies for the device's selection.
set -eu
root=$1 id=$2 sha=$3 size=$4 threads=$5 keep=$6 lock_wait=$7 service=${8:-} unit=${9:-}
case $id in ""|*[!0-9A-Za-z-]*) echo "bad release id ${id}" >&2; exit 2 ;; esac
case $sha in *[!0-9a-f]*|"") echo "bad sha256 ${sha}" >&2; exit 2 ;; esac
for n in "$size" "$threads" "$keep" "$lock_wait"; do
    case $n in ""|*[!0-9]*) echo "bad number ${n}" >&2; exit 2 ;; esac
done
mkdir -p -- "$root"
cd -- "$root"
#@COMMON@
mkdir -p releases incoming
# The lock is ours, so no other deploy is running: everything in incoming/ is a partial upload and every release
# without .complete (other than `current`, kept whatever it is) was left by an interrupted deploy.
find incoming -mindepth 1 -maxdepth 1 -exec rm -rf {} +
cur=$(readlink current 2>/dev/null || true)
for d in releases/*; do
    [ -d "$d" ] || continue
    [ "$d" = "$cur" ] && continue
    [ -e "$d/.complete" ] && continue
    if [ -e "$d/.unhealthy" ]; then
        echo "removing $d: its service failed the health check when it was deployed" >&2
        rm -rf "$d"
        continue
    fi
    if [ ! -e "$d/.incomplete" ] && [ -f "$d/bench.json" ] && verify_files "$d" 2>/dev/null; then
        touch "$d/.complete"  # finished by an edgeport older than the .complete marker: kept to roll back to
        continue
    fi
    echo "removing $d: left incomplete by an interrupted deploy" >&2
    rm -rf "$d"
done

part="incoming/$id.tar.gz"
head -c "$size" > "$part"
got=$(wc -c < "$part" | tr -d ' ')
[ "$got" = "$size" ] || { echo "the upload of release $id stopped after $got of $size bytes" >&2; exit 7; }
sum=$(sha256sum "$part" | cut -d ' ' -f 1)
[ "$sum" = "$sha" ] || { echo "the uploaded archive of release $id is corrupt (sha256 differs)" >&2; exit 7; }
rel="releases/$id"
[ ! -e "$rel" ] || { echo "release $id already exists on the device" >&2; exit 2; }
mkdir "$rel"
touch "$rel/.incomplete"   # for people reading the directory (and older edgeports); .complete is what counts
tar -xzf "$part" -C "$rel" --strip-components=1 </dev/null
rm -f "$part"
sh "$rel/install.sh" "$root/$rel/venv" >&2 </dev/null
verify_files "$rel" || { echo "release $id failed its checks on the device; current release kept" >&2; exit 8; }
"$rel/venv/bin/python" -m edgeport_runtime.smoke "$rel/bundle" --threads "$threads" --json \
        > "$rel/smoke.json" </dev/null || {
    "$rel/venv/bin/python" -c 'import json, sys; r = json.load(open(sys.argv[1]))
bad = [a["artifact"] for a in r["artifacts"] if a.get("passed") is False]
print("smoke parity failed on the device for " + ", ".join(bad) + "; current release kept", file=sys.stderr)' \
        "$rel/smoke.json" </dev/null
    exit 3; }
# on-device choice among the artifacts that passed their gates, at 1..THREADS threads: RELEASE/selected.json
"$rel/venv/bin/python" -m edgeport_runtime.select "$rel" --max-threads "$threads" >/dev/null </dev/null || {
    echo "release $id: no configuration could be selected on the device; current release kept" >&2
    exit 10; }
# bench what the release will run (its selection) for the deploying machine's report
"$rel/venv/bin/edgeport-run" bench "$rel" --runs 200 --json > "$rel/bench.json" </dev/null
# Two-phase commit: report readiness and switch only when the deploying machine answers COMMIT. A dropped
# connection or a killed `edgeport deploy` gives EOF here, and the previous release stays current.
echo "READY $id"
answer=""
read -r answer || true
[ "$answer" = "COMMIT" ] || { echo "no COMMIT from the deploying machine; current release kept" >&2; exit 5; }
# complete only now, after install, hash check, smoke, selection, bench and COMMIT; then the atomic switch
# (gated on /health when a service runs), so `current` only ever points at a complete release
rm -f "$rel/.incomplete"
echo "$id" > "$rel/.complete"
[ -z "$service" ] || service_configure "$service" "$unit"
gated=0
gated_switch "$rel" || gated=$?
if [ "$gated" != 0 ]; then
    rm -f "$rel/.complete"
    echo "failed its health check after the switch" > "$rel/.unhealthy"
    exit "$gated"
fi
# prune: keep `current` and the newest $keep complete releases (so at least the newest previous one)
n=0
for d in $(ls -1d releases/* | sort -r); do
    [ -e "$d/.complete" ] || continue
    n=$((n + 1))
    [ "$n" -le "$keep" ] && continue
    [ "$(readlink current)" = "$d" ] && continue
    rm -rf "$d"
done
echo "$id"
