"""`edgeport fleet` against three real OpenSSH servers on localhost (plus a port where nothing listens), driven by
the real ansible-playbook: clean rollout, a failing canary, a failure in the second batch with --rollback-on-fail,
an unreachable host counted against --max-fail, status, rollback and bad inventories.

Every "device" is its own sshd with its own host key, client key and device directory, started and stopped here.
A device is made to fail its smoke check by a `break-smoke` file in its directory: its sshd sets PYTHONPATH to a
sitecustomize that then shifts the stored check outputs the device's smoke check compares against (as a device
whose numbers differ would). A missing sshd fails these tests with the command that installs it.
"""
import json
import os
from pathlib import Path

import pytest

from sshd import SshServer, free_port

N_DEVICES = 3

SITECUSTOMIZE = '''
import os, sys
FLAG = {flag!r}
if "edgeport_runtime.smoke" in sys.orig_argv and os.path.exists(FLAG):
    import edgeport_runtime.manifest as m
    _load = m.load_npy
    def load_npy(path, what):
        x = _load(path, what)
        return x + 1.0 if what == "the stored check outputs" else x  # far beyond any smoke tolerance
    m.load_npy = load_npy
'''


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    servers = []
    for i in range(N_DEVICES):
        d = base / f"dev{i}"
        (d / "site").mkdir(parents=True)
        (d / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE.format(flag=str(d / "break-smoke")))
        servers.append(SshServer(d, extra_config=f"SetEnv PYTHONPATH={d / 'site'}\n"))
    kh = base / "known_hosts"
    kh.write_text("".join(s.known_hosts_line for s in servers))
    yield {"servers": servers, "base": base, "known_hosts": str(kh)}
    for s in servers:
        s.stop()


def _line(name, port, key, remote, profile="x86_64"):
    return (f"{name} ansible_host=127.0.0.1 ansible_port={port} ansible_ssh_private_key_file={key} "
            f"edgeport_remote_dir={remote} edgeport_profile={profile}\n")


def _inventory(devices, order, path, dead=()):
    """An INI inventory with the devices in ``order`` (indexes) and unreachable hosts named in ``dead``."""
    lines = ["[edge]\n"]
    for i in order:
        s = devices["servers"][i]
        lines.append(_line(f"dev{i}", s.port, s.info["key"], s.info["remote"]))
    for name in dead:
        lines.append(_line(name, free_port(), devices["servers"][0].info["key"], "/nonexistent"))
    # the interpreter Ansible runs its modules with on the device (not a pyenv shim discovery may pick)
    lines.append(f"[edge:vars]\nansible_user={devices['servers'][0].user}\n"
                 "ansible_python_interpreter=/usr/bin/python3\n")
    path.write_text("".join(lines))
    return path


def _current(devices, i):
    link = Path(devices["servers"][i].info["remote"]) / "current"
    return os.readlink(link).split("/")[-1] if link.is_symlink() else None


def _break(devices, i, broken=True):
    flag = devices["servers"][i].dir / "break-smoke"
    flag.write_text("") if broken else flag.unlink(missing_ok=True)


def _result(out):
    """The JSON results file the run names on its last line."""
    path = out.strip().splitlines()[-1].split("Results in ")[1].split(";")[0]
    return json.loads(Path(path).read_text())


def _hosts(doc):
    return {h["host"]: h for h in doc["hosts"]}


def test_fleet_clean_rollout_switches_every_host(devices, full_bundle, tmp_path, cli):
    inv = _inventory(devices, [0, 1, 2], tmp_path / "hosts.ini")
    code, out, err = cli("fleet", "deploy", full_bundle, "--inventory", inv, "--canary", 1, "--batch", 2,
                         "--known-hosts", devices["known_hosts"])
    assert code == 0, out + err
    doc = _result(out)
    assert doc["complete"] is True and doc["policy"]["canary"] == 1
    hosts = _hosts(doc)
    release = doc["releases"]["x86_64"]
    for i in range(N_DEVICES):
        h = hosts[f"dev{i}"]
        assert h["status"] == "switched" and h["smoke"] == "pass" and h["p50_ms"] > 0, h
        assert _current(devices, i) == release  # what the device itself points at
        rel = Path(devices["servers"][i].info["remote"]) / "releases" / release
        assert (rel / ".complete").is_file() and json.loads((rel / "smoke.json").read_text())["passed"]
    assert hosts["dev0"]["phase"] == "canary" and hosts["dev2"]["phase"] == "rollout"
    for i in range(N_DEVICES):  # the printed table has a row per host with its release and status
        assert any(ln.startswith(f"dev{i} ") and release in ln and "switched" in ln for ln in out.splitlines())
    code, out, err = cli("fleet", "status", "--inventory", inv, "--known-hosts", devices["known_hosts"])
    assert code == 0, err
    assert all(any(ln.startswith(f"dev{i} ") and release in ln for ln in out.splitlines()) for i in range(3))

    from edgeport.check.report import fleet_summary

    summary = fleet_summary(Path(full_bundle))
    assert summary["hosts"] == 3 and summary["switched"] == 3 and summary["complete"] is True


def test_fleet_canary_failure_stops_before_other_hosts(devices, full_bundle, tmp_path, cli):
    before = [_current(devices, i) for i in range(N_DEVICES)]
    assert all(before)
    _break(devices, 0)
    try:
        inv = _inventory(devices, [0, 1, 2], tmp_path / "hosts.ini")
        code, out, err = cli("fleet", "deploy", full_bundle, "--inventory", inv, "--canary", 1, "--batch", "100%",
                             "--max-fail", 100, "--known-hosts", devices["known_hosts"])
    finally:
        _break(devices, 0, False)
    assert code == 1, out + err
    doc = _result(out)
    hosts = _hosts(doc)
    assert doc["complete"] is False and "STOPPED" in out
    assert hosts["dev0"]["status"] == "failed" and "smoke parity failed" in hosts["dev0"]["error"]
    assert hosts["dev1"]["status"] == "not run" and hosts["dev2"]["status"] == "not run"
    assert [_current(devices, i) for i in range(N_DEVICES)] == before  # no host changed, the canary neither


def test_fleet_second_batch_failure_rolls_back_switched_hosts(devices, full_bundle, tmp_path, cli):
    before = [_current(devices, i) for i in range(N_DEVICES)]
    _break(devices, 2)
    try:
        inv = _inventory(devices, [0, 1, 2], tmp_path / "hosts.ini")
        code, out, err = cli("fleet", "deploy", full_bundle, "--inventory", inv, "--canary", 1, "--batch", 1,
                             "--rollback-on-fail", "--known-hosts", devices["known_hosts"])
    finally:
        _break(devices, 2, False)
    assert code == 1, out + err
    doc = _result(out)
    hosts = _hosts(doc)
    new = doc["releases"]["x86_64"]
    assert doc["complete"] is False
    assert hosts["dev2"]["status"] == "failed" and "smoke parity failed" in hosts["dev2"]["error"]
    for i in (0, 1):  # switched by this run (canary, first batch), then returned to where they were
        assert hosts[f"dev{i}"]["status"] == "rolled back", hosts[f"dev{i}"]
        assert hosts[f"dev{i}"]["previous"] == before[i] and hosts[f"dev{i}"]["current"] == before[i]
        assert (Path(devices["servers"][i].info["remote"]) / "releases" / new / ".complete").is_file()
    assert [_current(devices, i) for i in range(N_DEVICES)] == before


def test_fleet_unreachable_host_counts_against_max_fail(devices, full_bundle, tmp_path, cli):
    before = [_current(devices, i) for i in range(N_DEVICES)]
    inv = _inventory(devices, [0, 1], tmp_path / "hosts.ini", dead=["gone"])
    text = inv.read_text().splitlines(keepends=True)
    gone = next(ln for ln in text if ln.startswith("gone "))
    text.remove(gone)
    text.insert(1, gone)  # inventory order: gone, dev0, dev1
    inv.write_text("".join(text))
    # batch 1 = gone + dev0: one of two unreachable (50%) is more than --max-fail 40: dev1 is never touched
    code, out, err = cli("fleet", "deploy", full_bundle, "--inventory", inv, "--canary", 0, "--batch", 2,
                         "--max-fail", 40, "--known-hosts", devices["known_hosts"])
    assert code == 1, out + err
    doc = _result(out)
    hosts = _hosts(doc)
    assert doc["complete"] is False
    assert hosts["gone"]["status"] == "unreachable"
    assert hosts["dev0"]["status"] == "switched" and _current(devices, 0) == doc["releases"]["x86_64"]
    assert hosts["dev1"]["status"] == "not run" and _current(devices, 1) == before[1]


def test_fleet_rollback_switches_hosts_back_and_reports_those_it_cannot(devices, tmp_path, cli):
    before = [_current(devices, i) for i in range(N_DEVICES)]
    older = []
    for i in range(N_DEVICES):
        rel = Path(devices["servers"][i].info["remote"]) / "releases"
        complete = sorted(p.name for p in rel.iterdir() if (p / ".complete").is_file())
        older.append(max((r for r in complete if r < before[i]), default=None))  # what the device must pick
    assert older[0] and not older[2]  # dev0 has one to go back to; dev2 only ever completed one release
    inv = _inventory(devices, [0, 1, 2], tmp_path / "hosts.ini")
    code, out, err = cli("fleet", "rollback", "--inventory", inv, "--known-hosts", devices["known_hosts"])
    assert code == 1, out + err  # not every host could roll back
    rows = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    for i in range(N_DEVICES):
        if older[i]:
            assert _current(devices, i) == older[i] and "rolled back" in rows[f"dev{i}"] and older[i] in rows[f"dev{i}"]
        else:
            assert _current(devices, i) == before[i]
            assert "rollback failed" in rows[f"dev{i}"] and "no complete release older than" in rows[f"dev{i}"]


def test_fleet_unknown_host_key_fails_that_host(devices, full_bundle, tmp_path, cli):
    before = _current(devices, 0)
    kh = tmp_path / "known_hosts"
    kh.write_text("")  # host-key checking is on: an unknown key is refused, never trusted on first use
    inv = _inventory(devices, [0], tmp_path / "hosts.ini")
    code, out, err = cli("fleet", "deploy", full_bundle, "--inventory", inv, "--known-hosts", kh)
    assert code == 1, out + err
    h = _hosts(_result(out))["dev0"]
    assert h["status"] == "unreachable" and "Host key verification failed" in h["error"]
    assert _current(devices, 0) == before


def test_fleet_inventory_values_are_never_templated_or_run(devices, tmp_path, cli):
    canary = tmp_path / "pwned"
    s = devices["servers"][0]
    remote = f"{tmp_path}/x{{{{ lookup('pipe', 'touch {canary}') }}}}$(touch {canary})"
    inv = tmp_path / "hosts.ini"
    inv.write_text("[edge]\n" + _line("dev0", s.port, s.info["key"], f'"{remote}"') +
                   f"[edge:vars]\nansible_user={s.user}\nansible_python_interpreter=/usr/bin/python3\n")
    code, out, err = cli("fleet", "status", "--inventory", inv, "--known-hosts", devices["known_hosts"])
    assert code == 0, out + err  # reached, and the directory (as written) has no releases
    assert not canary.exists()  # neither Ansible's templating nor the device's shell ran it


@pytest.mark.parametrize("content, message", [
    ("[edge]\npi1 ansible_host=10.0.0.9\n", "set no edgeport_profile"),
    ("[edge]\npi1 edgeport_profile=rpi9\n", "unknown device profile"),
    ("all:\n  hosts: [oops\n", "cannot read it as an INI or YAML inventory"),
    ("", "lists no hosts"),
])
def test_fleet_bad_inventory_is_a_usage_error(tmp_path, cli, content, message):
    inv = tmp_path / "hosts"
    inv.write_text(content)
    code, _, err = cli("fleet", "status", "--inventory", inv)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_fleet_bad_options_are_usage_errors(tmp_path, cli):
    code, _, err = cli("fleet", "deploy", tmp_path, "--inventory", tmp_path / "none.ini", "--batch", "120%")
    assert code == 2 and "--batch 120%" in err
    code, _, err = cli("fleet", "deploy", tmp_path, "--inventory", tmp_path / "none.ini", "--max-fail", 101)
    assert code == 2 and "--max-fail 101" in err
    code, _, err = cli("fleet", "status", "--inventory", tmp_path / "none.ini")
    assert code == 2 and "no such file" in err


def test_report_fleet_summary_counts_the_newest_rollout(tmp_path):
    from edgeport.check.report import fleet_line, fleet_summary

    assert fleet_summary(tmp_path) is None  # never rolled out: no fleet section
    (tmp_path / "fleet").mkdir()
    policy = {"canary": 1, "batch": "20%", "max_fail": 10, "rollback_on_fail": True}

    def rollout(name, statuses, p50s):
        hosts = [{"host": f"h{i}", "status": s, "p50_ms": p} for i, (s, p) in enumerate(zip(statuses, p50s))]
        (tmp_path / "fleet" / name).write_text(json.dumps({"started": name[:15], "complete": False,
                                                           "policy": policy, "releases": {}, "hosts": hosts}))
    rollout("20260101T000000Z.json", ["switched"], [9.0])
    rollout("20260102T000000Z.json", ["switched", "switched", "failed", "unreachable", "not run"],
            [0.5, 0.25, None, None, None])
    s = fleet_summary(tmp_path)
    assert s["file"] == "fleet/20260102T000000Z.json"  # the newest one
    assert (s["hosts"], s["switched"], s["failed"], s["unreachable"], s["not_run"], s["stopped"]) == (5, 2, 1, 1, 1, 0)
    assert s["p50_ms_median"] == 0.5  # upper median of [0.25, 0.5] by hand
    line = fleet_line(s)
    assert "STOPPED on 5 hosts: 2 switched, 1 failed, 1 unreachable, 1 not run" in line


def test_fleet_events_give_each_host_what_it_got_to():
    """The callback's JSON lines, as Ansible sends them for four hosts of one batch, fold into their statuses."""
    from edgeport.devices.fleet import (TASK_DEPLOY, TASK_PREPARE, TASK_UNREACHABLE, HostResult, _apply_events)

    play = "edgeport fleet - rolling batches"
    ev = [
        {"host": h, "task": "group the hosts (no connection)", "status": "ok", "play": "x"} for h in "abcd"
    ] + [
        {"host": "a", "task": TASK_PREPARE, "status": "unreachable", "play": play, "msg": "Connection refused"},
        {"host": "a", "task": TASK_UNREACHABLE, "status": "failed", "play": play, "msg": "Connection refused"},
        {"host": "a", "task": "fail the host", "status": "failed", "play": play, "msg": "Connection refused"},
        {"host": "b", "task": TASK_PREPARE, "status": "ok", "play": play, "stdout": "/home/pi/edgeport\nR0"},
        {"host": "b", "task": TASK_DEPLOY, "status": "ok", "play": play, "stdout": "READY R1\nR1"},
        {"host": "c", "task": TASK_PREPARE, "status": "ok", "play": play, "stdout": "/home/pi/edgeport"},
        {"host": "c", "task": TASK_DEPLOY, "status": "failed", "play": play, "msg": "smoke parity failed"},
        {"host": "c", "task": "fail the host", "status": "failed", "play": play, "msg": "smoke parity failed"},
    ]
    results = {h: HostResult(h, "x86_64") for h in "abcd"}
    assert _apply_events(results, ev) is False  # no rollout-complete marker: Ansible stopped it
    got = {h: (r.status, r.previous, r.phase) for h, r in results.items()}
    assert got == {"a": ("unreachable", None, "rollout"), "b": ("switched", "R0", "rollout"),
                   "c": ("failed", None, "rollout"), "d": ("not run", None, None)}
    assert results["a"].error == "Connection refused" and results["c"].error == "smoke parity failed"
    assert _apply_events(results, [{"host": "localhost", "task": "mark", "status": "ok",
                                    "edgeport_rollout": "complete"}]) is True
