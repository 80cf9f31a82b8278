# Runs on the device over SSH (sent as `sh -c`, with remote_common.sh in place of the @COMMON@ line; the archive
# comes on stdin, followed later by the deploying machine's COMMIT).
# Under the device lock: removes what interrupted deploys left (incoming/ uploads, releases without .complete),
# receives and checks the archive, installs it as a new release, verifies it (artifact hashes, smoke parity,
# bench), asks the deploying machine for COMMIT, then writes the release's .complete marker and switches
# `current` to it. Anything that stops earlier leaves a release without .complete: never current, removed by the
# next deploy. Pruning keeps `current` and the newest KEEP complete releases.
# Args: ROOT RELEASE_ID SHA256 SIZE THREADS KEEP LOCK_WAIT
set -eu
root=$1 id=$2 sha=$3 size=$4 threads=$5 keep=$6 lock_wait=$7
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
"$rel/venv/bin/edgeport-run" bench "$rel/bundle" --threads "$threads" --runs 200 --json \
    > "$rel/bench.json" </dev/null
# Two-phase commit: report readiness and switch only when the deploying machine answers COMMIT. A dropped
# connection or a killed `edgeport deploy` gives EOF here, and the previous release stays current.
echo "READY $id"
answer=""
read -r answer || true
[ "$answer" = "COMMIT" ] || { echo "no COMMIT from the deploying machine; current release kept" >&2; exit 5; }
# complete only now, after install, hash check, smoke, bench and COMMIT; then the atomic switch (a new symlink
# renamed over the old one: rename(2) is atomic), so `current` only ever points at a complete release
rm -f "$rel/.incomplete"
echo "$id" > "$rel/.complete"
ln -sfn "$rel" current.new
mv -T current.new current
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
