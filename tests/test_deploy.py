"""Deploy over SSH against a real OpenSSH server on localhost: install, smoke, bench, atomic switch, rollback,
the device lock, the .complete marker, pruning, verified rollback and host-key messages.

The server runs on a free non-default port with throwaway host and client keys, started and stopped here. A
missing sshd fails these tests (with the command that installs it); it never skips them.
"""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sshd import SshServer

ROOT = Path(__file__).resolve().parents[1]
STATE = {}  # release ids that later tests check (tests in this module run in file order)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    yield server.info
    server.stop()


def _args(s, *extra):
    return ["--device", "x86_64", "--host", s["host"], "--port", str(s["port"]), "--identity", s["key"],
            "--known-hosts", s["known_hosts"], "--remote-dir", s["remote"], *extra]


def _current(s):
    link = Path(s["remote"]) / "current"
    return os.readlink(link).split("/")[-1] if link.is_symlink() else None


def _releases(s):
    r = Path(s["remote"]) / "releases"
    return sorted(p.name for p in r.iterdir()) if r.exists() else []


@pytest.fixture(scope="module")
def first_deploy(sshd, full_bundle):
    from edgeport.cli import main

    assert main(["deploy", str(full_bundle), *_args(sshd)]) == 0
    return _current(sshd)


def _complete(s, rid):
    return (Path(s["remote"]) / "releases" / rid / ".complete").is_file()


def _lock_free(s):
    """True when no deploy/rollback holds the device lock (flock -n succeeds at once)."""
    lock = Path(s["remote"]) / ".lock"
    return not lock.exists() or subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0


def _wait_lock_free(s, seconds=300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not _lock_free(s):
        time.sleep(0.2)
    assert _lock_free(s), "the device side of a deploy still holds the lock"


def _start_deploy(s, bundle):
    return subprocess.Popen([sys.executable, "-m", "edgeport.cli", "deploy", str(bundle), *_args(s)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_new_release(s, known, seconds=300):
    """The id of a release directory not in ``known`` once it exists (the device is installing it)."""
    releases = Path(s["remote"]) / "releases"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = [p.name for p in releases.iterdir() if p.name not in known and (p / "venv").exists()]
        if new:
            return new[0]
        time.sleep(0.05)
    raise AssertionError(f"no new release appeared in {releases} within {seconds} s")


def _png_of_check_input(bundle, path):
    """Write check input 0 of the bundle as an 8-bit PNG, inverting the manifest's preprocessing by hand."""
    from PIL import Image

    man = json.loads((bundle / "manifest.json").read_text())
    pre = man["preprocessing"]
    x = np.load(bundle / man["check"]["inputs"])[0, :, :, 0]
    raw = (x - pre.get("input_offset", 0.0)) / pre.get("input_scale", 1.0)
    lo, hi = pre.get("raw_range", [0, 255])
    pixels = np.clip(np.round((raw - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def test_deploy_installs_checks_and_switches(first_deploy, sshd, full_bundle, tmp_path):
    rel = Path(sshd["remote"]) / "releases" / first_deploy
    assert first_deploy and _complete(sshd, first_deploy) and not (rel / ".incomplete").exists()
    smoke = json.loads((rel / "smoke.json").read_text())
    assert smoke["passed"] and len([a for a in smoke["artifacts"] if "passed" in a]) == 8
    bench = json.loads((rel / "bench.json").read_text())
    selected = json.loads((rel / "selected.json").read_text())  # measured at 1..2 threads (the profile's cores)
    assert {r["threads"] for r in selected["table"]} == {1, 2} and bench["latency_ms"]["p50"] > 0
    assert (bench["artifact"], bench["threads"]) == (selected["artifact"], selected["threads"])  # bench ran the choice
    # the device's own venv runs the bundle with no TensorFlow installed
    out = subprocess.run([str(rel / "venv/bin/python"), "-c", "import importlib.util as u; "
                          "print(u.find_spec('tensorflow') is None)"], capture_output=True, text=True)
    assert out.stdout.strip() == "True"
    # the README's example works from the offline install: Pillow came with the [image] extra
    png = _png_of_check_input(full_bundle, tmp_path / "digit.png")
    out = subprocess.run([str(rel / "venv/bin/edgeport-run"), "predict", str(rel / "bundle"), "--input", str(png),
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["results"][0]["top"]) == 3
    pulled = list((full_bundle / "devices").glob("x86_64-*.json"))
    assert pulled and json.loads(pulled[0].read_text())["release"] == first_deploy
    assert not any(Path(sshd["remote"], "incoming").iterdir())  # the upload was moved out of incoming/


def test_report_gets_a_device_row(first_deploy, full_bundle, cli):
    if not (full_bundle / "bench.json").exists():
        assert cli("bench", full_bundle, "--runs", "20")[0] == 0
    if not (full_bundle / "parity.json").exists():
        assert cli("parity", full_bundle)[0] == 0
    code, out, err = cli("report", full_bundle)
    assert code == 0, err
    rep = json.loads((full_bundle / "report.json").read_text())
    assert rep["devices"] and rep["devices"][0]["profile"] == "x86_64" and rep["devices"][0]["smoke"] == "pass"
    assert rep["devices"][0]["release"] == first_deploy and rep["devices"][0]["is_current"] is True
    assert "x86_64" in (full_bundle / "report.md").read_text()


def test_failed_smoke_keeps_previous_release(first_deploy, sshd, full_bundle, tmp_path, cli):
    bad = tmp_path / "bad"
    shutil.copytree(full_bundle, bad)
    np.save(bad / "check_tflite-int8.npy", np.load(bad / "check_tflite-int8.npy") + 0.5)  # wrong expectations
    before = set(_releases(sshd))
    code, _, err = cli("deploy", bad, *_args(sshd))
    assert code == 2 and "previous release stays current" in err and "smoke parity failed" in err
    assert _current(sshd) == first_deploy
    failed = set(_releases(sshd)) - before
    assert len(failed) == 1 and not _complete(sshd, failed.pop())  # left behind, never marked complete


def test_killed_deploy_keeps_previous_release(first_deploy, sshd, full_bundle):
    known = set(_releases(sshd))
    proc = _start_deploy(sshd, full_bundle)
    killed = _wait_new_release(sshd, known)  # its venv is being built: the device is mid-install
    assert not _complete(sshd, killed) and not _lock_free(sshd)
    os.killpg(proc.pid, signal.SIGKILL)  # the deploying machine dies mid-install
    proc.wait()
    assert _current(sshd) == first_deploy
    _wait_lock_free(sshd)  # the device side runs on to its COMMIT question, gets EOF, stops
    assert _current(sshd) == first_deploy and not _complete(sshd, killed) and killed in _releases(sshd)
    STATE["killed"] = killed


def test_overlapping_deploys_take_turns_and_leftovers_are_cleaned(first_deploy, sshd, full_bundle, cli):
    remote = Path(sshd["remote"])
    # what interrupted deploys leave: a partial upload, and a newer release with only venv/ and no marker
    junk = remote / "incoming" / "20000101T000000-deadbeef.tar.gz"
    junk.write_bytes(b"partial")
    broken = "29991231T235959-0badc0de"
    (remote / "releases" / broken / "venv").mkdir(parents=True)
    known = set(_releases(sshd))
    with open(remote / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the test plays a deploy in progress: both below must wait for it
        time.sleep(1.1)  # release ids carry a seconds timestamp
        a = _start_deploy(sshd, full_bundle)
        time.sleep(1.1)
        b = _start_deploy(sshd, full_bundle)
        # a rollback and a third deploy that will not wait: refused with a clear message, nothing touched
        code, _, err = cli("rollback", *_args(sshd, "--lock-wait", "1")[2:])
        assert code == 2 and "another edgeport deploy or rollback is running" in err
        code, _, err = cli("deploy", full_bundle, *_args(sshd, "--lock-wait", "1"))
        assert code == 2 and "another edgeport deploy or rollback is running" in err
        assert junk.exists() and broken in _releases(sshd) and set(_releases(sshd)) == known
        fcntl.flock(held, fcntl.LOCK_UN)
    for proc in (a, b):  # one after the other, each under the lock: both succeed
        _, err = proc.communicate(timeout=1800)
        assert proc.returncode == 0, err.decode()
    new = sorted(set(_releases(sshd)) - known)
    assert len(new) == 2 and all(_complete(sshd, r) for r in new) and _current(sshd) in new
    left = _releases(sshd)
    assert first_deploy in left  # the previous complete release is kept
    assert broken not in left and STATE["killed"] not in left  # incomplete ones were removed (under the lock)
    assert all(_complete(sshd, r) for r in left)
    assert list((remote / "incoming").iterdir()) == []


def test_rollback_verifies_its_target_then_switches_and_is_recorded(first_deploy, sshd, full_bundle, cli):
    cur = _current(sshd)
    prev = max(r for r in _releases(sshd) if r < cur and _complete(sshd, r))  # what rollback must pick
    bundle = Path(sshd["remote"]) / "releases" / prev / "bundle"
    man = json.loads((bundle / "manifest.json").read_text())
    art = bundle / next(a["path"] for a in man["artifacts"] if a["name"] == "tflite-int8")
    good = art.read_bytes()
    art.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one flipped bit in the release to roll back to
    code, _, err = cli("rollback", *_args(sshd)[2:])
    assert code == 2 and "does not match the sha256" in err and "stays current" in err
    assert _current(sshd) == cur
    art.write_bytes(good)
    code, out, err = cli("rollback", *_args(sshd)[2:], "--bundle", full_bundle)
    assert code == 0, err
    assert _current(sshd) == prev and prev in out
    # report.md no longer shows a rolled-back release as the one running
    assert cli("report", full_bundle)[0] == 0
    row = json.loads((full_bundle / "report.json").read_text())["devices"][0]
    assert row["current_release"] == prev and row["is_current"] == (row["release"] == prev)
    assert (f"rolled back: current is {prev}" in (full_bundle / "report.md").read_text()) != row["is_current"]
    # rolling back further ends at the oldest complete release, with a clear refusal
    for _ in range(len(_releases(sshd))):
        code, _, err = cli("rollback", *_args(sshd)[2:])
        if code != 0:
            break
    assert code == 2 and "no complete release older than" in err
    assert _current(sshd) == min(r for r in _releases(sshd) if _complete(sshd, r))


def test_remote_values_are_quoted(sshd, tmp_path, cli):
    canary = tmp_path / "pwned"
    code, _, err = cli("rollback", *_args(sshd)[2:-2], "--remote-dir", f"x; touch {canary}; $(touch {canary})")
    assert code == 2 and "no edgeport releases under" in err
    assert not canary.exists()


def test_unknown_host_key_refused(sshd, full_bundle, tmp_path, cli):
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    args = _args(sshd)
    args[args.index("--known-hosts") + 1] = str(kh)
    code, _, err = cli("deploy", full_bundle, *args)
    assert code == 2 and "host key not trusted" in err and f"ssh-keyscan -p {sshd['port']} 127.0.0.1 >> {kh}" in err
    assert "~/.ssh/known_hosts" not in err and "CHANGED" not in err


def test_changed_host_key_gets_its_own_message(sshd, full_bundle, tmp_path, cli):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{sshd['port']} {other[0]} {other[1]}\n")  # a different key recorded for it
    args = _args(sshd)
    args[args.index("--known-hosts") + 1] = str(kh)
    code, _, err = cli("deploy", full_bundle, *args, "--accept-new-host-key")
    assert code == 2 and "has CHANGED" in err and "man-in-the-middle" in err and str(kh) in err
    assert ">>" not in err and "ssh-keyscan" not in err  # never advise trusting the new key blindly


def test_bad_host_argument(cli, full_bundle):
    code, _, err = cli("deploy", full_bundle, "--device", "x86_64", "--host", "nouser")
    assert code == 2 and "expected USER@HOST" in err
    code, _, err = cli("deploy", full_bundle, "--device", "x86_64", "--host=-oProxyCommand=touch@x")
    assert code == 2 and "expected USER@HOST" in err


def _no_flock_path(tmp_path):
    """A PATH with the tools the device scripts use, but no flock (a device without util-linux's flock)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "cat", "rm", "mkdir", "sleep", "readlink", "ls", "sort", "ln", "mv"):
        (bindir / tool).symlink_to(shutil.which(tool))
    return str(bindir)


def test_mkdir_lock_without_flock_refuses_live_owner_and_takes_over_dead_one(tmp_path):
    from edgeport.devices.deploy import remote_script

    root = tmp_path / "device"
    root.mkdir()
    env = {"PATH": _no_flock_path(tmp_path)}
    cmd = remote_script("remote_rollback.sh", str(root), 1)
    (root / ".lock.d").mkdir()
    (root / ".lock.d" / "pid").write_text(f"{os.getpid()}\n")  # a live process holds it
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env)
    assert out.returncode == 6 and f"held by pid {os.getpid()}" in out.stderr
    assert (root / ".lock.d").is_dir()  # not ours to remove
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs: its owner died without releasing the lock
    (root / ".lock.d" / "pid").write_text(f"{dead.pid}\n")
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, env=env)
    assert out.returncode == 4 and "no current release" in out.stderr  # got past the lock
    assert not (root / ".lock.d").exists()  # and released it on exit
