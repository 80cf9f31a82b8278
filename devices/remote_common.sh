# Shared part of remote_deploy.sh and remote_rollback.sh (spliced in at their @COMMON@ line before sending).
#
# Device-side lock: one deploy or rollback at a time per ROOT. flock(1) on ROOT/.lock when the device has it
# (released by the kernel when the holder dies);
# otherwise a mkdir lock ROOT/.lock.d holding the owner's pid (taken over when that pid is gone).
# Needs: the current directory = ROOT, $lock_wait (seconds). Sets an EXIT trap when the mkdir lock is used.
root=$(pwd)
lock_busy() {
    echo "another edgeport deploy or rollback is running on this device (lock $root/.lock held$1; waited" \
         "${lock_wait}s). Wait for it to finish, then run yours again (or raise --lock-wait)." >&2
    exit 6
}
if command -v flock >/dev/null 2>&1; then
    exec 9>>.lock
    flock -w "$lock_wait" 9 || lock_busy ""
else
    waited=0
    while ! mkdir .lock.d 2>/dev/null; do
        owner=$(cat .lock.d/pid 2>/dev/null || true)
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then
            rm -rf .lock.d   # its owner died without releasing it
            continue
        fi
        [ "$waited" -lt "$lock_wait" ] || lock_busy " by pid ${owner:-?}"
        sleep 1
        waited=$((waited + 1))
    done
    echo $$ > .lock.d/pid
    trap 'rm -rf "$root/.lock.d"' EXIT  # an absolute path: works whatever the current directory is then
    trap 'exit 130' INT TERM HUP
fi

# verify_release REL: what a release must pass to become current again: its .complete marker and verify_files.
verify_release() {
    [ -e "$1/.complete" ] || { echo "$1: no .complete marker (its deploy never finished)" >&2; return 1; }
    verify_files "$1"
}

# verify_files REL: its venv's edgeport-run, the runtime importable from that venv, every artifact of its
# manifest inside bundle/ with the sha256 the manifest lists. Prints what failed to stderr and returns 1.
verify_files() {
    [ -x "$1/venv/bin/edgeport-run" ] || { echo "$1: venv/bin/edgeport-run is missing" >&2; return 1; }
    "$1/venv/bin/python" -c '
import sys
from pathlib import Path
try:
    from edgeport_runtime.manifest import read_manifest, sha256_file
except Exception as e:
    sys.exit(f"{sys.argv[1]}: the runtime does not import from its venv ({e})")
base = Path(sys.argv[1]).resolve()
try:
    man = read_manifest(base)
except Exception as e:
    sys.exit(f"{base}: {e}")
for a in man.artifacts:
    p = (base / a.path).resolve()
    if base not in p.parents:
        sys.exit(f"{base}: artifact {a.name} path {a.path!r} points outside the bundle")
    if not p.is_file():
        sys.exit(f"{base}: artifact {a.name} ({a.path}) is missing")
    if sha256_file(p) != a.sha256:
        sys.exit(f"{base}: artifact {a.name} ({a.path}) does not match the sha256 in its manifest")
' "$1/bundle" </dev/null >&2 || return 1
}
