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

# switch_current REL: point `current` at REL atomically (a new symlink renamed over the old one: rename(2)).
switch_current() {
    ln -sfn "$1" current.new && mv -T current.new current
}

# ---- the model service (edgeport deploy --service; see devices/service.py) ----
# ROOT/service.conf, one line: MODE NAME HOST PORT HEALTH_TIMEOUT TOKEN_FILE, MODE = systemd-user | systemd-system |
# process, TOKEN_FILE '-' for none (else absolute or relative to ROOT; older files have no such field).
# service_configure LINE [UNIT_TEXT]: check LINE, install the unit (systemd) and record LINE in service.conf.
# service_load: read service.conf into svc_*; returns 1 when this ROOT has no service.
# service_restart / service_stop: (re)start or stop it on the current release.
# health_wait: poll http://HOST:PORT/health until 200 or HEALTH_TIMEOUT seconds; on failure print why (stderr).
#   The service answers only once its model is loaded, so three error answers in a row (1.5 s) are final, as is
#   the process of a `process` service exiting.
# gated_switch REL: switch `current` to REL; with a service, restart it and wait for /health, and when it does
#   not come up healthy, switch back to the release that was current, restart the service on it, print why and
#   return 9 (the caller exits 9: "health gate failed, previous release current again").
svc_check() {
    case $svc_mode in systemd-user|systemd-system|process) ;; *) echo "bad service mode ${svc_mode}" >&2; exit 2 ;; esac
    case $svc_name in ""|*[!A-Za-z0-9_.-]*) echo "bad service name ${svc_name}" >&2; exit 2 ;; esac
    case $svc_host in ""|*[!A-Za-z0-9.:_-]*) echo "bad service host ${svc_host}" >&2; exit 2 ;; esac
    for n in "$svc_port" "$svc_timeout"; do
        case $n in ""|*[!0-9]*) echo "bad service number ${n}" >&2; exit 2 ;; esac
    done
    svc_token=${svc_token:--}
    case $svc_token in -) ;; *[!A-Za-z0-9._/-]*|*..*) echo "bad service token file ${svc_token}" >&2; exit 2 ;; esac
}
service_load() {
    [ -f "$root/service.conf" ] || return 1
    read -r svc_mode svc_name svc_host svc_port svc_timeout svc_token < "$root/service.conf" || return 1
    svc_check
}
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}
svc_systemctl() {
    if [ "$svc_mode" = systemd-user ]; then
        XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)} systemctl --user "$@"
    else
        as_root systemctl "$@"
    fi
}
service_configure() {
    read -r svc_mode svc_name svc_host svc_port svc_timeout svc_token <<SVC
$1
SVC
    svc_check
    case $svc_mode in
    systemd-*)
        command -v systemctl >/dev/null 2>&1 || { echo "this device has no systemd (systemctl not found);" \
            "deploy with --service-manager process instead" >&2; exit 2; }
        if [ "$svc_mode" = systemd-user ]; then
            unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
            mkdir -p "$unit_dir"
            printf '%s' "$2" > "$unit_dir/.$svc_name.service.tmp"
            mv "$unit_dir/.$svc_name.service.tmp" "$unit_dir/$svc_name.service"
            loginctl enable-linger "$(id -un)" 2>/dev/null || echo "warning: loginctl enable-linger $(id -un)" \
                "failed: the service starts at your next login, not at boot (run it once as root)" >&2
        else
            if [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
                echo "--service-scope system needs root on the device: deploy as root, give $(id -un)" \
                     "passwordless sudo, or use --service-scope user" >&2
                exit 2
            fi
            printf '%s' "$2" > "$root/.$svc_name.service.tmp"
            as_root install -m 0644 "$root/.$svc_name.service.tmp" "/etc/systemd/system/$svc_name.service"
            rm -f "$root/.$svc_name.service.tmp"
        fi
        svc_systemctl daemon-reload
        svc_systemctl enable "$svc_name.service" 2>/dev/null
        ;;
    esac
    printf '%s\n' "$1" > service.conf.new
    mv service.conf.new service.conf
}
service_stop() {
    case $svc_mode in
    process)
        pidf="$root/service/$svc_name.pid"
        [ -f "$pidf" ] || return 0
        pid=$(cat "$pidf" 2>/dev/null || true)
        case $pid in ""|*[!0-9]*) rm -f "$pidf"; return 0 ;; esac
        # only our own process (a pid is reused once its process is gone): its command line runs edgeport-run serve
        if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'edgeport-run serve'
        then
            kill "$pid" 2>/dev/null || true
            n=0
            while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidf"
        ;;
    *) svc_systemctl stop "$svc_name.service" ;;
    esac
}
service_restart() {
    case $svc_mode in
    process)
        service_stop
        mkdir -p "$root/service"
        # a new session, every inherited descriptor closed (fd 9 holds the deploy lock: the service must not)
        if command -v setsid >/dev/null 2>&1; then ss=setsid; else ss=; fi
        tok=""
        [ "$svc_token" = - ] || case $svc_token in /*) tok=$svc_token ;; *) tok="$root/$svc_token" ;; esac
        ( cd / && exec $ss nohup "$root/current/venv/bin/edgeport-run" serve "$root/current" --host "$svc_host" \
            --port "$svc_port" ${tok:+--token-file "$tok"} </dev/null >>"$root/service/$svc_name.log" 2>&1 9>&- ) &
        echo $! > "$root/service/$svc_name.pid"
        ;;
    *)
        svc_systemctl reset-failed "$svc_name.service" 2>/dev/null || true
        svc_systemctl restart "$svc_name.service"
        ;;
    esac
}
service_log_tail() {
    case $svc_mode in
    process) tail -n 3 "$root/service/$svc_name.log" 2>/dev/null | tr '\n' ' ' ;;
    systemd-user) journalctl --user -u "$svc_name.service" -n 3 -o cat --no-pager 2>/dev/null | tr '\n' ' ' ;;
    *) as_root journalctl -u "$svc_name.service" -n 3 -o cat --no-pager 2>/dev/null | tr '\n' ' ' ;;
    esac
}
health_wait() {
    case $svc_host in 0.0.0.0) probe=127.0.0.1 ;; ::) probe=::1 ;; *) probe=$svc_host ;; esac
    case $probe in *:*) url="http://[$probe]:$svc_port/health" ;; *) url="http://$probe:$svc_port/health" ;; esac
    pidf=""
    [ "$svc_mode" = process ] && pidf="$root/service/$svc_name.pid"
    "$root/current/venv/bin/python" -c '
import json, os, sys, time, urllib.error, urllib.request
url, timeout, pidf = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + timeout
why = "no answer"
unhealthy = 0
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                sys.exit(0)
            why = "HTTP %d" % r.status
    except urllib.error.HTTPError as e:
        unhealthy += 1
        body = e.read(4000).decode("utf-8", "replace")
        try:
            d = json.loads(body)
            reason = d.get("reason") or d.get("error") or body
        except (ValueError, AttributeError):
            reason = body
        why = "HTTP %d: %s" % (e.code, " ".join(str(reason).split())[:300])
    except Exception as e:
        why = "no answer from %s (%s)" % (url, " ".join(str(getattr(e, "reason", e)).split())[:200])
    if pidf:
        try:
            os.kill(int(open(pidf).read()), 0)
        except (OSError, ValueError):
            why = "the service process exited (" + why + ")"
            break
    if unhealthy >= 3:
        break
    if time.monotonic() >= deadline:
        why = "no healthy answer within %gs; last: %s" % (timeout, why)
        break
    time.sleep(0.5)
print(why, file=sys.stderr)
sys.exit(1)
' "$url" "$svc_timeout" "$pidf" </dev/null
}
gated_switch() {
    gs_new=$1
    gs_prev=$(readlink current 2>/dev/null || true)
    switch_current "$gs_new" || return 1
    service_load || return 0
    service_restart || true
    if gs_why=$(health_wait 2>&1); then
        return 0
    fi
    gs_why="$gs_why; $(service_log_tail)"
    if [ -n "$gs_prev" ] && [ "$gs_prev" != "$gs_new" ]; then
        switch_current "$gs_prev" || return 1
        service_restart || true
        if back=$(health_wait 2>&1); then
            back="the service answers /health again on it"
        else
            back="the service did not come up on it either ($back)"
        fi
        echo "release ${gs_new#releases/} did not pass /health (${gs_why% }); current is" \
             "${gs_prev#releases/} again and $back" >&2
    else
        rm -f current
        service_stop || true
        echo "release ${gs_new#releases/} did not pass /health (${gs_why% }); there is no" \
             "previous release to go back to, so the service was stopped" >&2
    fi
    return 9
}
