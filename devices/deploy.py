"""`edgeport deploy` and `edgeport rollback`: ship an offline bundle over SSH, switch atomically, roll back.

On the device (under ``--remote-dir``, default ``~/edgeport``)::

    releases/<UTC time>-<archive sha8>/   bundle/, venv/, smoke.json, selected.json, bench.json (one per deploy)
    current -> releases/<id>              switched by rename(2) only after install + smoke + selection + bench
    service.conf, service/                the model service, when deployed with --service (devices/service.py)
    .lock                                 one deploy or rollback at a time (flock, or .lock.d with mkdir)
    incoming/                             the archive while it uploads (removed by the next deploy if cut off)

A release is complete only once its ``.complete`` marker exists, written after install, hash check, smoke parity,
the device's selection (``selected.json``: the fastest artifact x backend x threads among those that passed their
gates), bench and the deploying machine's COMMIT; anything else is removed by the next deploy, never made current.
With a service on the device, the switch is health-gated: the service restarts on the new release and must
answer /health within the timeout, else the previous release is made current again and the deploy exits 1.

SSH runs with BatchMode (never a password prompt; keys or an agent only, nothing stored) and strict host-key
checking against your known_hosts (or ``--known-hosts``); ``--accept-new-host-key`` trusts a first-seen host
explicitly. The results the device produced are pulled back into BUNDLE/devices/ for `edgeport report`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from edgeport_runtime.errors import EdgeportError, UsageError
from edgeport_runtime.manifest import atomic_write_text

from .offline import make_offline_bundle
from .profiles import Profile
from .service import ServiceSpec, render_unit

HERE = Path(__file__).parent
KEEP = 3  # complete releases kept on the device (current and at least two to roll back to)
TIMEOUT = 1800  # seconds for the remote install + checks (pip on a Pi Zero is slow)
LOCK_WAIT = 600  # seconds a deploy or rollback waits for another one on the same device before giving up


class DeployError(EdgeportError):
    """The device refused, failed a check, or could not be reached. The previous release stays current."""


class HealthGateError(DeployError):
    """The service did not answer /health on the new release in time; the previous release is current again."""

    exit_code = 1


HEALTH_EXIT = 9  # the device scripts' exit code for "health gate failed, switched back"


USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_\[][A-Za-z0-9._:\[\]-]{0,252}$")  # a name, IPv4 or IPv6; never "-..." (an option)


@dataclass
class Target:
    """How to reach a device."""

    host: str  # USER@HOST
    port: int = 22
    identity: Optional[str] = None
    known_hosts: Optional[str] = None
    accept_new_host_key: bool = False
    remote_dir: str = "edgeport"
    lock_wait: int = LOCK_WAIT

    def ssh_args(self) -> List[str]:
        """ssh options: batch mode, strict host keys, the given key and known_hosts file."""
        user, _, host = self.host.partition("@")
        if not USER_RE.match(user) or not HOST_RE.match(host):
            raise UsageError(f"--host {self.host!r}: expected USER@HOST (user and host name or address: letters, "
                             "digits, '.', '_', '-'; e.g. pi@raspberrypi.local).")
        if not 1 <= self.port <= 65535:
            raise UsageError(f"--port {self.port}: expected a TCP port from 1 to 65535.")
        if not self.remote_dir or "\n" in self.remote_dir or "\x00" in self.remote_dir:
            raise UsageError(f"--remote-dir {self.remote_dir!r}: expected a directory on the device.")
        if not 0 <= self.lock_wait <= 86400:
            raise UsageError(f"--lock-wait {self.lock_wait}: expected seconds from 0 to 86400.")
        args = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
                "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}"]
        if self.identity:
            if not Path(self.identity).is_file():
                raise UsageError(f"--identity {self.identity}: no such key file.")
            args += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            if not Path(self.known_hosts).is_file():
                raise UsageError(f"--known-hosts {self.known_hosts}: no such file.")
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return args + ["--", self.host]

    def ssh_error(self, err: str, returncode: int) -> Optional[DeployError]:
        """ssh's own failures (exit 255) as a DeployError; host keys get their own messages. None otherwise."""
        kh = self.known_hosts or "~/.ssh/known_hosts"
        hostname = self.host.split("@", 1)[1]
        entry = hostname if self.port == 22 else f"[{hostname}]:{self.port}"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err or "has changed and you have requested strict" in err:
            return DeployError(
                f"{self.host}: the device's host key has CHANGED since it was recorded in {kh}. This can be a "
                "man-in-the-middle attack (or the device was reinstalled); nothing was sent. Compare the new key "
                "with the one the device itself shows at its console (ssh-keygen -lf "
                "/etc/ssh/ssh_host_ed25519_key.pub); only if they match, delete the old entry with "
                f"ssh-keygen -R {shlex.quote(entry)} -f {kh} and connect again.")
        if "Host key verification failed" in err or "host key is known" in err:
            return DeployError(
                f"{self.host}: host key not trusted: {entry} is not in {kh} yet (first connection). Check the "
                "key's fingerprint with the device's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "
                f"then record it: ssh-keyscan -p {self.port} {hostname} >> {kh} (or pass --accept-new-host-key "
                "once).")
        if returncode == 255:
            return DeployError(f"{self.host}: ssh failed ({err.splitlines()[-1] if err else 'exit 255'}).")
        return None

    def run(self, command: str, stdin: Optional[bytes] = None, timeout: int = TIMEOUT,
            unchanged: str = "the previous release stays current") -> str:
        """Run ``command`` on the device; raise DeployError with ssh's own (or the device's) explanation on
        failure, ending in ``unchanged``: what the failure left as it was."""
        try:
            out = subprocess.run(self.ssh_args() + [command], input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.host}: no answer within {timeout} s; {unchanged}.") from None
        if out.returncode != 0:
            err = out.stderr.decode(errors="replace").strip()
            if out.returncode == HEALTH_EXIT and err:
                raise HealthGateError(f"{self.host}: {err.splitlines()[-1]}")
            raise self.ssh_error(err, out.returncode) or DeployError(
                f"{self.host}: {err.splitlines()[-1] if err else f'exit {out.returncode}'} "
                f"(exit {out.returncode}); {unchanged}.")
        return out.stdout.decode()


def remote_script(name: str, *args: object) -> str:
    """The shell command that runs devices/NAME on the device (with remote_common.sh spliced in) with ``args``.

    The script travels inside the command as one quoted word (``sh -c SCRIPT NAME ARGS...``); every argument is
    quoted, so no value (a profile's, a path's) is ever parsed by the device's shell.
    """
    body = (HERE / name).read_text().replace("#@COMMON@\n", (HERE / "remote_common.sh").read_text())
    # comment lines are for readers of this repository, not for the device (they would fill its `ps` output)
    body = "\n".join(ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")) + "\n"
    return " ".join(shlex.quote(str(a)) for a in ("sh", "-c", body, name, *args))


def _release_id(archive: Path) -> str:
    h = hashlib.sha256(archive.read_bytes()).hexdigest()[:8]
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{h}"


def _two_phase(target: Target, command: str, rid: str, archive: Path,
               before_commit: Optional[Callable[[str], None]] = None) -> None:
    """Send the archive, wait for READY, answer COMMIT; the device switches only after that answer.

    ``before_commit(release_id)`` runs between READY (every check on the device passed) and COMMIT; an exception
    from it withholds COMMIT, so the device keeps its current release.
    """
    with tempfile.TemporaryFile() as errf:  # a file, not a pipe: pip's output can never block the device
        proc = subprocess.Popen(target.ssh_args() + [command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errf)
        try:
            try:
                with open(archive, "rb") as f:
                    shutil.copyfileobj(f, proc.stdin)
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # the device stopped reading (lock busy, disk full): its message is on stderr
            ready = False
            for line in proc.stdout:  # the device prints READY once install, hash check, smoke and bench passed
                if line.strip() == f"READY {rid}".encode():
                    if before_commit is not None:
                        before_commit(rid)
                    ready = True
                    proc.stdin.write(b"COMMIT\n")
                    proc.stdin.flush()
                    break
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.stdout.read()
            proc.wait(timeout=TIMEOUT)
        except BaseException:
            proc.kill()  # Ctrl-C or a crash here: the device sees EOF instead of COMMIT and keeps its release
            raise
        errf.seek(0)
        err = errf.read().decode(errors="replace").strip()
    if proc.returncode == HEALTH_EXIT and ready and err:
        raise HealthGateError(f"{target.host}: {err.splitlines()[-1]}")
    if proc.returncode != 0 or not ready:
        ssh_err = target.ssh_error(err, proc.returncode)
        if ssh_err:
            raise ssh_err
        tail = "; ".join(err.splitlines()[-3:]) if err else f"exit {proc.returncode}"
        raise DeployError(f"{target.host}: the device did not complete release {rid} ({tail}); the previous "
                          "release stays current.")


def _state_file(bundle_dir: Path, profile: str, target: Target) -> Path:
    safe_host = target.host.replace("@", "_at_").replace("/", "_")
    return bundle_dir / "devices" / f"{profile}-{safe_host}.json"


def _device_home(target: Target) -> Tuple[str, str]:
    """(absolute path of the device directory, the device user): what a systemd unit must name."""
    q = shlex.quote(target.remote_dir)
    out = target.run(f"mkdir -p -- {q} && cd -- {q} && pwd -P && id -un", timeout=60,
                     unchanged="nothing was changed").splitlines()
    if len(out) != 2 or not out[0].startswith("/"):
        raise DeployError(f"{target.host}: could not find the absolute path of {target.remote_dir} on the device "
                          f"(got {out!r}); nothing was changed.")
    return out[0], out[1]


def _device_json(target: Target, path: str, what: str) -> Dict:
    """A JSON object the device wrote (read back over ssh), or a DeployError naming it."""
    try:
        d = json.loads(target.run(f"cat -- {shlex.quote(path)}", timeout=60))
    except ValueError:
        d = None
    if not isinstance(d, dict):
        raise DeployError(f"{target.host}: {path} ({what}) is not a JSON object; the release is current but its "
                          "results could not be recorded.")
    return d


def _selection_summary(sel: Dict) -> Dict:
    """The fields of a device's selected.json the state file and the report use (checked: it came from the
    device)."""
    keys = {"artifact": str, "backend": str, "threads": int, "latency_ms_p50": (int, float),
            "throughput_per_s": (int, float), "gated": bool}
    out = {}
    for k, kind in keys.items():
        v = sel.get(k)
        if not isinstance(v, kind) or isinstance(v, bool) != (kind is bool):
            raise DeployError(f"selected.json from the device: field {k!r} is {v!r}; expected {kind}.")
        out[k] = v
    table = sel.get("table")
    out["configurations"] = len(table) if isinstance(table, list) else 0
    return out


def deploy(bundle_dir: str, profile: Profile, target: Target, warn=print, service: Optional[ServiceSpec] = None,
           before_commit: Optional[Callable[[str], None]] = None) -> Dict:
    """Deploy ``bundle_dir`` to ``target`` as ``profile``; return the device's smoke, selection and bench results.

    With ``service`` the device (re)installs the model service (devices/service.py) before the switch; with or
    without it, a device that runs a service gets a health-gated switch. ``before_commit(release_id)`` runs after
    the device reported every check passed and before the COMMIT that lets it switch.

    Raises:
        HealthGateError (exit 1): the service did not answer /health on the new release in time; the previous
            release is current again (and the service restarted on it).
        DeployError: unreachable device, untrusted or changed host key, another deploy holding the device's lock,
            failed install, hash check, smoke parity, selection or bench. In every case the device's ``current``
            release is left as it was.
    """
    target.ssh_args()  # bad --host/--port/--known-hosts: a usage error before the archive is built
    q = shlex.quote
    unit = ""
    if service is not None:
        service.check()
        if service.manager == "systemd":
            unit = render_unit(service, *_device_home(target))
    with tempfile.TemporaryDirectory() as d:
        archive = Path(d) / "release.tar.gz"
        ob = make_offline_bundle(bundle_dir, profile, str(archive), force=True, warn=warn)
        rid = _release_id(archive)
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        cmd = remote_script("remote_deploy.sh", target.remote_dir, rid, sha, archive.stat().st_size,
                            profile.cores, KEEP, target.lock_wait, service.conf_line() if service else "", unit)
        _two_phase(target, cmd, rid, archive, before_commit)
    rel = f"{target.remote_dir}/releases/{rid}"
    smoke = _device_json(target, rel + "/smoke.json", "smoke parity")
    bench = _device_json(target, rel + "/bench.json", "bench")
    selected = _device_json(target, rel + "/selected.json", "the device's selection")
    conf = target.run(f"cat -- {q(target.remote_dir + '/service.conf')} 2>/dev/null || true", timeout=60).split()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    result = {"host": target.host, "port": target.port, "remote_dir": target.remote_dir, "profile": profile.name,
              "release": rid, "artifacts": ob.artifacts, "left_out": ob.left_out, "smoke": smoke, "bench": bench,
              "selected": _selection_summary(selected), "deployed": now, "current": rid, "current_since": now}
    if len(conf) >= 5 and conf[3].isdigit():
        result["service"] = {"mode": conf[0], "name": conf[1], "host": conf[2], "port": int(conf[3]),
                             "health": "ok"}
    state = _state_file(Path(bundle_dir), profile.name, target)
    state.parent.mkdir(exist_ok=True)
    # the device's whole table beside the state file: BUNDLE/devices/<profile>-<host>/selected.json
    sel_dir = state.with_suffix("")
    sel_dir.mkdir(exist_ok=True)
    atomic_write_text(sel_dir / "selected.json", json.dumps(selected, indent=2) + "\n")
    atomic_write_text(state, json.dumps(result, indent=2) + "\n")
    return result


def rollback(target: Target, bundle_dir: Optional[str] = None) -> Tuple[str, List[Path]]:
    """Switch the device's ``current`` back to the previous complete release (checked first); return its id.

    With ``bundle_dir``, the device JSON files of that bundle for this host and remote dir record the new
    current release, so `edgeport report` no longer shows the rolled-back one as current. Returns the release
    id and the files updated.

    Raises:
        HealthGateError (exit 1): the device runs a service and it did not answer /health on the older release;
            the release that was current is current again.
        DeployError: nothing to roll back to, it failed its checks, the lock is busy, or ssh failed.
    """
    rid = target.run(remote_script("remote_rollback.sh", target.remote_dir, target.lock_wait),
                     timeout=TIMEOUT + target.lock_wait,  # with a service: restarts and /health waits
                     unchanged="the device's current release was not changed").strip()
    updated = []
    if bundle_dir:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        for f in sorted((Path(bundle_dir) / "devices").glob("*.json")):
            try:
                d = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # not ours to judge here; `edgeport report` says what is wrong with it
            if d.get("host") == target.host and d.get("remote_dir", target.remote_dir) == target.remote_dir \
                    and d.get("port", target.port) == target.port:
                d["current"], d["current_since"] = rid, now
                atomic_write_text(f, json.dumps(d, indent=2) + "\n")
                updated.append(f)
    return rid, updated


def releases(target: Target) -> Dict[str, object]:
    """The device's releases and which one is current."""
    q = shlex.quote(target.remote_dir)
    out = target.run(f"if cd -- {q} 2>/dev/null; then readlink current || true; ls -1 releases 2>/dev/null || true; fi",
                     timeout=60)
    lines = out.split()
    current = lines[0].split("/")[-1] if lines and lines[0].startswith("releases/") else None
    return {"current": current, "releases": [x for x in lines if not x.startswith("releases/")]}
