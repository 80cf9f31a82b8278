#!/bin/sh
# Runs on the device over SSH: point `current` at the newest complete release older than the current one.
# Args: ROOT
set -eu
cd "$1"
cur=$(readlink current 2>/dev/null || true)
[ -n "$cur" ] || { echo "no current release under $1" >&2; exit 4; }
prev=""
for d in $(ls -1d releases/* | sort); do
    [ -e "$d/.incomplete" ] && continue
    [ "$d" = "$cur" ] && break
    prev=$d
done
[ -n "$prev" ] || { echo "no release older than $cur to roll back to" >&2; exit 4; }
ln -sfn "$prev" current.new
mv -T current.new current
echo "${prev#releases/}"
