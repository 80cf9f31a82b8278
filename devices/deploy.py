"""`edgeport deploy` and `edgeport rollback`: ship an offline bundle over SSH, switch atomically, roll back.

On the device (under ``--remote-dir``, default ``~/edgeport``)::

    releases/<UTC time>-<archive sha8>/   bundle/, venv/, smoke.json, bench.json (one per deploy)
    current -> releases/<id>              switched by rename(2) only after install + smoke + bench succeeded

SSH runs with BatchMode (never a password prompt; keys or an agent only, nothing stored) and strict host-key
checking against your known_hosts (or ``--known-hosts``); ``--accept-new-host-key`` trusts a first-seen host
explicitly. The results the device produced are pulled back into BUNDLE/devices/ for `edgeport report`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from edgeport_runtime.errors import EdgeportError, UsageError
from edgeport_runtime.manifest import atomic_write_text

from .offline import make_offline_bundle
from .profiles import Profile

HERE = Path(__file__).parent
KEEP = 3  # complete releases kept on the device (current and at least two to roll back to)
TIMEOUT = 1800  # seconds for the remote install + checks (pip on a Pi Zero is slow)


class DeployError(EdgeportError):
    """The device refused, failed a check, or could not be reached. The previous release stays current."""


@dataclass
class Target:
    """How to reach a device."""

    host: str  # USER@HOST
    port: int = 22
    identity: Optional[str] = None
    known_hosts: Optional[str] = None
    accept_new_host_key: bool = False
    remote_dir: str = "edgeport"

    def ssh_args(self) -> List[str]:
        """ssh options: batch mode, strict host keys, the given key and known_hosts file."""
        if "@" not in self.host or self.host.startswith("@") or self.host.endswith("@"):
            raise UsageError(f"--host {self.host!r}: expected USER@HOST.")
        args = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
                "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}"]
        if self.identity:
            if not Path(self.identity).is_file():
                raise UsageError(f"--identity {self.identity}: no such key file.")
            args += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return args + [self.host]

    def run(self, command: str, stdin: Optional[bytes] = None, timeout: int = TIMEOUT) -> str:
        """Run ``command`` on the device; raise DeployError with ssh's own explanation on failure."""
        try:
            out = subprocess.run(self.ssh_args() + [command], input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.host}: no answer within {timeout} s; the previous release stays current.") \
                from None
        if out.returncode != 0:
            err = out.stderr.decode(errors="replace").strip()
            if "Host key verification failed" in err or "No ED25519 host key is known" in err or \
                    "host key for" in err.lower():
                raise DeployError(f"{self.host}: host key not trusted ({err.splitlines()[-1]}). Verify the "
                                  f"fingerprint, then add it: ssh-keyscan -p {self.port} {self.host.split('@')[1]} "
                                  ">> ~/.ssh/known_hosts (or pass --accept-new-host-key once).")
            if out.returncode == 255:
                raise DeployError(f"{self.host}: ssh failed ({err.splitlines()[-1] if err else 'exit 255'}).")
            raise DeployError(f"{self.host}: {err.splitlines()[-1] if err else f'exit {out.returncode}'} "
                              f"(exit {out.returncode}); the previous release stays current.")
        return out.stdout.decode()

    def script(self, path: Path, *args: str, timeout: int = TIMEOUT) -> str:
        """Run a local shell script on the device (sent over stdin) with ``args``."""
        cmd = "sh -s -- " + " ".join(shlex.quote(a) for a in args)
        return self.run(cmd, stdin=path.read_bytes(), timeout=timeout)


def _release_id(archive: Path) -> str:
    h = hashlib.sha256(archive.read_bytes()).hexdigest()[:8]
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{h}"


def _two_phase(target: Target, command: str, rid: str) -> None:
    """Run the device script, wait for READY, answer COMMIT; the device switches only after that answer."""
    proc = subprocess.Popen(target.ssh_args() + [command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        ready = False
        for line in proc.stdout:  # the device prints READY once install, smoke parity and bench passed
            if line.strip() == f"READY {rid}".encode():
                ready = True
                proc.stdin.write(b"COMMIT\n")
                proc.stdin.flush()
                proc.stdin.close()
                break
        if not ready:
            proc.stdin.close()
        proc.wait(timeout=TIMEOUT)
        err = proc.stderr.read().decode(errors="replace").strip()
    except BaseException:
        proc.kill()  # Ctrl-C or a crash here: the device sees EOF instead of COMMIT and keeps its release
        raise
    if proc.returncode != 0 or not ready:
        tail = "; ".join(err.splitlines()[-3:]) if err else f"exit {proc.returncode}"
        raise DeployError(f"{target.host}: the device did not complete release {rid} ({tail}); the previous "
                          "release stays current.")


def deploy(bundle_dir: str, profile: Profile, target: Target, warn=print) -> Dict:
    """Deploy ``bundle_dir`` to ``target`` as ``profile``; return the device's smoke and bench results.

    Raises:
        DeployError: unreachable device, untrusted host key, failed install, smoke parity or bench. In every
            case the device's ``current`` release is left as it was.
    """
    root = target.remote_dir
    with tempfile.TemporaryDirectory() as d:
        archive = Path(d) / "release.tar.gz"
        ob = make_offline_bundle(bundle_dir, profile, str(archive), force=True, warn=warn)
        rid = _release_id(archive)
        q = shlex.quote
        target.run(f"mkdir -p {q(root)}/incoming", timeout=60)
        remote_archive = f"incoming/{rid}.tar.gz"
        target.run(f"cat > {q(root)}/{q(remote_archive)}", stdin=archive.read_bytes(), timeout=600)
    script = f"incoming/deploy-{rid}.sh"
    target.run(f"cat > {q(root)}/{q(script)}", stdin=(HERE / "remote_deploy.sh").read_bytes(), timeout=60)
    _two_phase(target, f"cd {q(root)} && sh {q(script)} . {q(rid)} {q(remote_archive)} {profile.cores} {KEEP}; "
                       f"rc=$?; rm -f {q(script)}; exit $rc", rid)
    smoke = json.loads(target.run(f"cat {q(root)}/releases/{q(rid)}/smoke.json", timeout=60))
    bench = json.loads(target.run(f"cat {q(root)}/releases/{q(rid)}/bench.json", timeout=60))
    result = {"host": target.host, "profile": profile.name, "release": rid, "artifacts": ob.artifacts,
              "left_out": ob.left_out, "smoke": smoke, "bench": bench,
              "deployed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    out_dir = Path(bundle_dir) / "devices"
    out_dir.mkdir(exist_ok=True)
    safe_host = target.host.replace("@", "_at_").replace("/", "_")
    atomic_write_text(out_dir / f"{profile.name}-{safe_host}.json", json.dumps(result, indent=2) + "\n")
    return result


def rollback(target: Target) -> str:
    """Switch the device's ``current`` back to the previous complete release; return its id."""
    return target.script(HERE / "remote_rollback.sh", target.remote_dir, timeout=60).strip()


def releases(target: Target) -> Dict[str, object]:
    """The device's releases and which one is current."""
    q = shlex.quote(target.remote_dir)
    out = target.run(f"if cd {q} 2>/dev/null; then readlink current || true; ls -1 releases 2>/dev/null || true; fi",
                     timeout=60)
    lines = out.split()
    current = lines[0].split("/")[-1] if lines and lines[0].startswith("releases/") else None
    return {"current": current, "releases": [x for x in lines if not x.startswith("releases/")]}
