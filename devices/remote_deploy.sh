#!/bin/sh
# Runs on the device over SSH (uploaded, then `sh FILE ARGS`). Installs a release next to the others and only switches `current`
# to it when install, hash checks, smoke parity and bench all succeeded. An interrupted run leaves a release
# marked .incomplete, which the next deploy removes; `current` never points at it.
# Args: ROOT RELEASE_ID ARCHIVE THREADS KEEP
set -eu
root=$1 id=$2 archive=$3 threads=$4 keep=$5
cd "$root"
mkdir -p releases
for d in releases/*; do  # leftovers of interrupted deploys
    [ -e "$d/.incomplete" ] && rm -rf "$d"
done
rel="releases/$id"
rm -rf "$rel"
mkdir -p "$rel"
touch "$rel/.incomplete"
tar -xzf "$archive" -C "$rel" --strip-components=1
rm -f "$archive"
sh "$rel/install.sh" "$rel/venv" >&2
"$rel/venv/bin/python" -m edgeport_runtime.smoke "$rel/bundle" --threads "$threads" --json > "$rel/smoke.json" || {
    "$rel/venv/bin/python" -c 'import json, sys; r = json.load(open(sys.argv[1]))
bad = [a["artifact"] for a in r["artifacts"] if a.get("passed") is False]
print("smoke parity failed on the device for " + ", ".join(bad) + "; current release kept", file=sys.stderr)' \
        "$rel/smoke.json"
    exit 3; }
"$rel/venv/bin/edgeport-run" bench "$rel/bundle" --threads "$threads" --runs 200 --json > "$rel/bench.json"
# Two-phase commit: report readiness and switch only when the deploying machine answers COMMIT. A dropped
# connection or a killed `edgeport deploy` gives EOF here, and the previous release stays current.
echo "READY $id"
answer=""
read -r answer || true
[ "$answer" = "COMMIT" ] || { echo "no COMMIT from the deploying machine; current release kept" >&2; exit 5; }
rm -f "$rel/.incomplete"
# atomic switch: a new symlink renamed over the old one (rename(2) is atomic)
ln -sfn "$rel" current.new
mv -T current.new current
# keep the newest $keep complete releases, always including the current one
ls -1d releases/* | sort -r | tail -n +"$((keep + 1))" | while read -r old; do
    [ "$(readlink current)" = "$old" ] || rm -rf "$old"
done
echo "$id"
