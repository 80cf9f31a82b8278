"""`edgeport fleet deploy|status|rollback`: one bundle to many devices through Ansible.

edgeport reads an Ansible inventory (INI or YAML; every host names its device profile in ``edgeport_profile``, as
a host or group variable; optional ``edgeport_remote_dir``, default ``edgeport``), builds one offline archive per
profile present, and runs the playbooks in devices/fleet/ with the venv's ``ansible-playbook``:

* ``--canary N``: the first N hosts (inventory order) deploy first, in their own play with
  ``max_fail_percentage: 0``: one canary failing stops the rollout before any other host changes.
* ``--batch 20%``: the other hosts in rolling batches, Ansible ``serial``.
* ``--max-fail PCT``: Ansible ``max_fail_percentage`` of those batches (a failed or unreachable host counts);
  more failures than that in a batch stop the rollout.
* ``--rollback-on-fail``: when the rollout stopped, the hosts it had switched run `rollback.yml`.

On each host the playbook runs the device-side scripts of `edgeport deploy` (remote_deploy.sh, remote_rollback.sh
with remote_common.sh spliced in, every argument quoted): same lock, checks, smoke parity and atomic switch.
Ansible's SSH settings apply, with host-key checking forced on. Results come back as JSON lines from the
``edgeport_events`` callback (devices/fleet/callback_plugins), never from Ansible's screen output, and are written
to BUNDLE/fleet/<UTC time>.json; Ansible's own log goes beside it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from edgeport_runtime.errors import EdgeportError, UsageError, unknown_name
from edgeport_runtime.manifest import atomic_write_text

from .deploy import KEEP, LOCK_WAIT, TIMEOUT, remote_script
from .offline import make_offline_bundle
from .profiles import load_profiles

PLAYBOOKS = Path(__file__).parent / "fleet"
BATCH_RE = re.compile(r"^([1-9][0-9]{0,5})(%?)$")


class FleetError(EdgeportError):
    """Ansible itself could not run (not installed, a playbook error); no host was changed by edgeport."""


@dataclass
class Host:
    """One inventory host as edgeport uses it."""

    name: str
    profile: str
    remote_dir: str = "edgeport"


@dataclass
class HostResult:
    """What one host ended with after a fleet command."""

    host: str
    profile: str
    # switched | failed | unreachable | not run | stopped (the rollout stopped during its batch; not switched) |
    # rolled back | rollback failed | ok (status)
    status: str = "not run"
    release: Optional[str] = None
    previous: Optional[str] = None
    phase: Optional[str] = None
    smoke: Optional[str] = None  # pass | FAIL
    p50_ms: Optional[float] = None
    error: Optional[str] = None
    extra: Dict = field(default_factory=dict)


def _tool(name: str) -> str:
    """The venv's own Ansible executable (never another one on PATH)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise FleetError(f"{path}: not found; edgeport fleet needs ansible-core in edgeport's venv: "
                         "pip install -r requirements/toolkit.txt (or make venv).")
    return str(path)


def ansible_env(workdir: Path, known_hosts: Optional[str] = None) -> Dict[str, str]:
    """Environment for Ansible: host-key checking on, our callback, no retry files, UTF-8 (Ansible needs it)."""
    ssh_extra = "-o StrictHostKeyChecking=yes"
    if known_hosts:
        if not Path(known_hosts).is_file():
            raise UsageError(f"--known-hosts {known_hosts}: no such file.")
        ssh_extra += f" -o UserKnownHostsFile={shlex.quote(str(Path(known_hosts).resolve()))}"
    env = dict(os.environ)
    env.update({
        "ANSIBLE_HOST_KEY_CHECKING": "True",  # overrides an ansible.cfg that turned it off
        "ANSIBLE_SSH_EXTRA_ARGS": ssh_extra,
        "ANSIBLE_CALLBACK_PLUGINS": str(PLAYBOOKS / "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "edgeport_events",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        # SSH connections of this run only: a master connection left by an earlier run (ControlPersist) would
        # skip the host-key check of this one
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),
        "ANSIBLE_INVENTORY_ENABLED": "ini,yaml",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",  # an unreadable inventory is an error, not an empty fleet
        "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
        "EDGEPORT_FLEET_EVENTS": str(workdir / "events.jsonl"),
    })
    return env


def _host_order(data: Dict, group: str = "all", seen: Optional[List[str]] = None) -> List[str]:
    """Hosts in inventory order: a group's own hosts, then its children's, depth first, each host once."""
    seen = [] if seen is None else seen
    node = data.get(group) or {}
    for h in node.get("hosts", []):
        if h not in seen:
            seen.append(h)
    for child in node.get("children", []):
        if child != group:
            _host_order(data, child, seen)
    return seen


def read_inventory(path: str, workdir: Path) -> List[Host]:
    """The inventory's hosts with their profile and remote dir, checked; a clear UsageError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--inventory {path}: no such file; expected an Ansible inventory (INI or YAML) whose "
                         "hosts set edgeport_profile (see README, Fleet).")
    out = subprocess.run([_tool("ansible-inventory"), "-i", str(p), "--list"], capture_output=True, text=True,
                         env=ansible_env(workdir), timeout=120)
    if out.returncode != 0:
        # each plugin's own reason (INI and YAML) says what is wrong in the file; the rest is Ansible's summary
        why = [ln.split("]:", 1)[-1].strip() for ln in out.stderr.splitlines() if "Failed to parse inventory with" in
               ln and "plugin:" in ln] or [ln.strip() for ln in out.stderr.splitlines() if ln.strip()][-1:]
        raise UsageError(f"--inventory {path}: Ansible cannot read it as an INI or YAML inventory "
                         f"({'; '.join(why) or f'exit {out.returncode}'}); see README, Fleet for an example.")
    data = json.loads(out.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    names = _host_order(data)
    if not names:
        raise UsageError(f"--inventory {path}: lists no hosts; add at least one host with edgeport_profile.")
    profiles = load_profiles()
    hosts, missing = [], []
    for name in names:
        hv = hostvars.get(name, {})
        prof = hv.get("edgeport_profile")
        if not prof:
            missing.append(name)
            continue
        if not isinstance(prof, str) or prof not in profiles:
            raise unknown_name(f"device profile (edgeport_profile of host {name!r} in {path})", str(prof),
                               profiles, "Profiles are listed by `edgeport devices`.")
        rdir = hv.get("edgeport_remote_dir", "edgeport")
        if not isinstance(rdir, str) or not rdir or any(c in rdir for c in "\n\r\x00"):
            raise UsageError(f"--inventory {path}: host {name!r} has edgeport_remote_dir {rdir!r}; expected a "
                             "directory on the device (relative to the login's home, or absolute).")
        hosts.append(Host(name, prof, rdir))
    if missing:
        raise UsageError(f"--inventory {path}: host(s) {', '.join(missing)} set no edgeport_profile; give each "
                         "host its device profile as a host or group variable, e.g. `pi1 edgeport_profile=rpi4` "
                         "(profiles: `edgeport devices`).")
    return hosts


def parse_batch(batch: str) -> str:
    """--batch N or N% (1-100%) as Ansible's ``serial`` value."""
    m = BATCH_RE.match(str(batch).strip())
    if not m or (m.group(2) and int(m.group(1)) > 100):
        raise UsageError(f"--batch {batch}: expected a number of hosts (e.g. 5) or a percentage from 1% to 100% "
                         "(e.g. 20%).")
    return m.group(1) + m.group(2)


def _q(path: str) -> str:
    return shlex.quote(path)


def host_commands(host: Host) -> Dict[str, str]:
    """The per-host commands the playbooks run (from the device scripts `edgeport deploy` uses)."""
    root = _q(host.remote_dir)
    return {
        # `cd` first: a relative remote dir is relative to the login's home, as for `edgeport deploy`
        "prepare_cmd": f"cd && mkdir -p -- {root}/fleet-upload && cd -- {root} && pwd && "
                       "(readlink current 2>/dev/null | sed 's|^releases/||' || true)",
        "rollback_cmd": "cd && " + remote_script("remote_rollback.sh", host.remote_dir, LOCK_WAIT),
        "status_cmd": f"cd && if cd -- {root} 2>/dev/null; then readlink current || true; "
                      "ls -1 releases 2>/dev/null || true; fi",
    }


def _deploy_commands(host: Host, rel: Dict) -> Dict[str, str]:
    cmd = remote_script("remote_deploy.sh", host.remote_dir, rel["release"], rel["sha256"], rel["size"],
                        rel["cores"], KEEP, LOCK_WAIT)
    upload = f"{host.remote_dir}/fleet-upload/{rel['release']}.tar.gz"
    rdir = f"{host.remote_dir}/releases/{rel['release']}"
    # The archive, then COMMIT: remote_deploy.sh reads exactly SIZE bytes, checks, installs, smoke-checks and
    # benches, and reads the COMMIT only after it printed READY; any failure before exits without switching.
    # The upload is removed whatever the outcome, keeping the script's exit status.
    return {"deploy_cmd": f"cd && {{ cat -- {_q(upload)} && echo COMMIT; }} | {cmd}; rc=$?; "
                          f"cd && rm -f -- {_q(upload)}; exit $rc",
            "results_cmd": f"cd && cat -- {_q(rdir + '/smoke.json')} && echo && cat -- {_q(rdir + '/bench.json')}",
            "archive": rel["archive"], "release": rel["release"], "timeout": TIMEOUT + LOCK_WAIT}


def _yaml_vars(values: Dict) -> str:
    """Extra vars as YAML where every string is ``!unsafe``: Ansible must never template a device script."""
    def enc(v, indent):
        pad = "  " * indent
        if isinstance(v, dict):
            if not v:
                return " {}"
            return "".join(f"\n{pad}{json.dumps(str(k))}:{enc(x, indent + 1)}" for k, x in v.items())
        if isinstance(v, list):
            return " [" + ", ".join(f"!unsafe {json.dumps(str(x))}" for x in v) + "]"
        if isinstance(v, bool) or isinstance(v, int):
            return f" {json.dumps(v)}"
        return f" !unsafe {json.dumps(str(v))}"
    return enc(values, 0).lstrip("\n") + "\n"


def _events(workdir: Path) -> List[Dict]:
    f = workdir / "events.jsonl"
    if not f.is_file():
        return []
    return [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]


def run_playbook(name: str, inventory: str, extra: Dict, workdir: Path, known_hosts: Optional[str],
                 log: Optional[Path] = None) -> List[Dict]:
    """Run devices/fleet/NAME with ``extra`` vars; return the callback's events (its output goes to ``log``)."""
    (workdir / "ansible-tmp").mkdir(exist_ok=True)
    (workdir / "events.jsonl").unlink(missing_ok=True)
    vars_file = workdir / "vars.yml"
    vars_file.write_text(_yaml_vars(extra))
    cmd = [_tool("ansible-playbook"), "-i", str(Path(inventory).resolve()), "-e", f"@{vars_file}",
           str(PLAYBOOKS / name)]
    with open(log or workdir / "ansible.log", "ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=ansible_env(workdir, known_hosts),
                              cwd=workdir)
    events = _events(workdir)
    # 0 ok, 2 failed hosts, 4 unreachable hosts, 8 (also) stopped: outcomes the events explain. Anything else
    # (1, 3, 5, 250: a playbook, option or internal error) before any host reported is Ansible not running.
    if proc.returncode not in (0, 2, 4, 8) and not any(e["host"] != "localhost" for e in events):
        tail = (log or workdir / "ansible.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise FleetError(f"ansible-playbook {name} failed (exit {proc.returncode}): {' '.join(tail)}")
    return events


# task names in devices/fleet/deploy_host.yml whose results edgeport reads
TASK_PREPARE = "prepare (remote dir, current release)"
TASK_DEPLOY = "install, verify, smoke-check, bench and switch (remote_deploy.sh under the device lock)"
TASK_RESULTS = "read the device's smoke and bench results"
TASK_UNREACHABLE = "host unreachable"
PHASES = {"edgeport fleet - canary": "canary", "edgeport fleet - rolling batches": "rollout"}


def _apply_events(results: Dict[str, HostResult], events: List[Dict]) -> bool:
    """Fold the callback's events into ``results``; True when the rollout-complete marker was reached.

    A host counts as switched as soon as its remote_deploy.sh succeeded (it switches as its last step), whatever
    happened after: Ansible may stop the rollout before the host's later tasks run.
    """
    complete = False
    for e in events:
        if e.get("edgeport_rollout") == "complete":
            complete = True
        r = results.get(e["host"])
        if r is None:
            continue
        task, status = e["task"], e["status"]
        if task.startswith("group the hosts"):
            continue  # the controller sorting hosts into plays: no host was contacted
        if r.status == "not run":
            r.status = "stopped"  # touched by this run; replaced below by what it got to
        r.phase = r.phase or PHASES.get(e.get("play"))
        if status == "ok" and task == TASK_PREPARE:
            lines = e.get("stdout", "").splitlines()
            r.previous = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
        elif status == "ok" and task == TASK_DEPLOY:
            r.status = "switched"
        elif status == "ok" and task == TASK_RESULTS:
            _read_results(r, e.get("stdout", ""))
        elif status == "unreachable" or (status == "failed" and task == TASK_UNREACHABLE):
            if r.status != "switched":
                r.status = "unreachable"
            r.error = r.error or e.get("msg")
        elif status == "failed":
            if r.status == "stopped":  # not after switched, unreachable or a recorded result: the rescue's `fail`
                r.status = "failed"    # repeats what the host already got
            r.error = r.error or e.get("msg")  # the first failure is the cause; the rescue's `fail` repeats it
        res = e.get("edgeport_result")
        if res:
            r.status = res["status"]
            r.release = res.get("release") or r.release
            if res.get("lines") is not None:
                r.extra["lines"] = res["lines"]
    return complete


def _read_results(r: HostResult, text: str) -> None:
    """smoke.json and bench.json as the device wrote them (two JSON documents, one after the other)."""
    dec = json.JSONDecoder()
    try:
        smoke, end = dec.raw_decode(text.strip())
        bench, _ = dec.raw_decode(text.strip()[end:].lstrip())
    except ValueError:
        r.error = "the device's smoke.json/bench.json could not be read"
        return
    r.smoke = "pass" if smoke.get("passed") else "FAIL"
    r.p50_ms = (bench.get("latency_ms") or {}).get("p50")
    r.extra.update({"artifact": bench.get("artifact"), "backend": bench.get("backend")})


def build_archives(bundle: str, hosts: List[Host], workdir: Path, warn=print) -> Dict[str, Dict]:
    """One offline archive per profile in the inventory: {profile: {archive, release, sha256, size, cores}}."""
    profiles = load_profiles()
    out = {}
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    for name in sorted({h.profile for h in hosts}):
        archive = workdir / f"{name}.tar.gz"
        make_offline_bundle(bundle, profiles[name], str(archive), force=True, warn=warn)
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        out[name] = {"archive": str(archive), "release": f"{stamp}-{sha[:8]}", "sha256": sha,
                     "size": archive.stat().st_size, "cores": profiles[name].cores}
    return out


@dataclass
class Rollout:
    """A fleet deploy's outcome (also written to BUNDLE/fleet/<time>.json)."""

    hosts: List[HostResult]
    complete: bool
    policy: Dict
    releases: Dict[str, str]
    path: Optional[Path] = None
    log: Optional[Path] = None

    @property
    def ok(self) -> bool:
        return self.complete and all(h.status == "switched" for h in self.hosts)


def fleet_deploy(bundle: str, inventory: str, canary: int = 1, batch: str = "20%", max_fail: int = 0,
                 rollback_on_fail: bool = False, service: bool = False, known_hosts: Optional[str] = None,
                 warn=print) -> Rollout:
    """Deploy ``bundle`` to every host of ``inventory``: canary first, then rolling batches (see module doc)."""
    if service:
        raise UsageError("--service: fleet deploys follow `edgeport deploy --service`, which this edgeport does "
                         "not have yet; deploy without --service.")
    if not Path(bundle).is_dir():
        raise UsageError(f"{bundle}: not a directory; expected a bundle directory written by `edgeport convert`.")
    if canary < 0:
        raise UsageError(f"--canary {canary}: expected a number of hosts, 0 or more.")
    if not 0 <= max_fail <= 100:
        raise UsageError(f"--max-fail {max_fail}: expected a percentage from 0 to 100.")
    serial = parse_batch(batch)
    policy = {"canary": canary, "batch": serial, "max_fail": max_fail, "rollback_on_fail": rollback_on_fail}
    started = dt.datetime.now(dt.timezone.utc)
    fleet_dir = Path(bundle) / "fleet"
    fleet_dir.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    log = fleet_dir / f"{stamp}.log"
    with tempfile.TemporaryDirectory(prefix="edgeport-fleet-") as d:
        work = Path(d)
        hosts = read_inventory(inventory, work)
        rels = build_archives(bundle, hosts, work, warn=warn)
        plan = {h.name: {**host_commands(h), **_deploy_commands(h, rels[h.profile])} for h in hosts}
        results = {h.name: HostResult(h.name, h.profile) for h in hosts}
        extra = {"edgeport_plan": plan, "edgeport_canary": canary, "edgeport_batch": serial,
                 "edgeport_max_fail": max_fail}
        complete = _apply_events(results, run_playbook("deploy.yml", inventory, extra, work, known_hosts, log))
        for r in results.values():
            r.release = rels[r.profile]["release"] if r.status != "not run" else None
        switched = [n for n, r in results.items() if r.status == "switched"]
        if rollback_on_fail and not complete and switched:
            back = run_playbook("rollback.yml", inventory, {"edgeport_plan": plan, "edgeport_targets": switched},
                                work, known_hosts, log)
            for e in back:
                r = results.get(e["host"])
                res = e.get("edgeport_result") or {}
                if r is not None and res.get("status") == "rolled back":
                    r.status, r.extra["current"] = "rolled back", res.get("release")
                elif r is not None and e["status"] in ("failed", "unreachable") and "rollback_error" not in r.extra:
                    r.status, r.extra["rollback_error"] = "rollback failed", e.get("msg")
    for r in results.values():  # what each host runs now, where this run knows it
        if r.status == "switched":
            r.extra["current"] = r.release
        elif r.status == "failed" and r.previous:
            r.extra["current"] = r.previous  # the device kept it: nothing switches before the checks pass
    out = Rollout(list(results.values()), complete, policy, {p: v["release"] for p, v in rels.items()}, log=log)
    doc = {"started": started.isoformat(timespec="seconds"),
           "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "inventory": str(Path(inventory).resolve()), "policy": policy, "complete": complete,
           "releases": out.releases, "log": log.name,
           "hosts": [{"host": r.host, "profile": r.profile, "phase": r.phase, "release": r.release,
                      "previous": r.previous, "smoke": r.smoke, "p50_ms": r.p50_ms, "status": r.status,
                      "error": r.error, **r.extra} for r in out.hosts]}
    out.path = fleet_dir / f"{stamp}.json"
    atomic_write_text(out.path, json.dumps(doc, indent=2) + "\n")
    return out


def _on_every_host(playbook: str, inventory: str, known_hosts: Optional[str], targets: bool
                   ) -> Dict[str, HostResult]:
    """Run ``playbook`` with every inventory host's remote commands; the per-host results it reported.
    ``targets``: also name every host as a target (rollback acts on all of them)."""
    with tempfile.TemporaryDirectory(prefix="edgeport-fleet-") as d:
        work = Path(d)
        hosts = read_inventory(inventory, work)
        results = {h.name: HostResult(h.name, h.profile) for h in hosts}
        plan = {h.name: host_commands(h) for h in hosts}
        extra = {"edgeport_plan": plan, **({"edgeport_targets": list(plan)} if targets else {})}
        _apply_events(results, run_playbook(playbook, inventory, extra, work, known_hosts))
    return results


def fleet_rollback(inventory: str, known_hosts: Optional[str] = None) -> List[HostResult]:
    """Roll every host of ``inventory`` back to its previous release (each checked on the device first)."""
    results = _on_every_host("rollback.yml", inventory, known_hosts, targets=True)
    return list(results.values())


def fleet_status(inventory: str, known_hosts: Optional[str] = None) -> List[HostResult]:
    """Each host's current release (``release``) and how many releases it keeps (``extra['releases']``)."""
    results = _on_every_host("status.yml", inventory, known_hosts, targets=False)
    for r in results.values():
        lines = r.extra.pop("lines", None)
        if lines is not None:
            cur = [ln for ln in lines if ln.startswith("releases/")]
            r.release = cur[0].split("/", 1)[1] if cur else None
            r.extra["releases"] = [ln for ln in lines if not ln.startswith("releases/")]
    return list(results.values())


def result_table(results: List[HostResult]) -> str:
    """The per-host table printed at the end: host, profile, release (the one it runs now when known), smoke,
    p50, status."""
    rows = [("host", "profile", "release", "smoke", "p50 ms", "status")]
    for r in results:
        status = r.status + (f" ({r.error.splitlines()[-1][:120]})" if r.error and r.status not in
                             ("switched", "ok") else "")
        rows.append((r.host, r.profile, r.extra.get("current") or r.release or "-", r.smoke or "-",
                     "-" if r.p50_ms is None else f"{r.p50_ms:.4f}", status))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5] for row in rows)
