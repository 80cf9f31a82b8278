"""Deploy over SSH against a real OpenSSH server on localhost: install, smoke, bench, atomic switch, rollback.

The server runs on a free non-default port with throwaway host and client keys, started and stopped here.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
pytestmark = pytest.mark.skipif(SSHD is None, reason="OpenSSH server not installed (.ci/run installs it)")
ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):  # wait until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    yield {"port": port, "dir": d, "host": f"{user}@127.0.0.1", "key": str(d / "client_key"),
           "known_hosts": str(d / "known_hosts"), "remote": str(d / "device")}
    proc.terminate()
    proc.wait(timeout=10)


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


def test_deploy_installs_checks_and_switches(first_deploy, sshd, full_bundle):
    rel = Path(sshd["remote"]) / "releases" / first_deploy
    assert first_deploy and not (rel / ".incomplete").exists()
    smoke = json.loads((rel / "smoke.json").read_text())
    assert smoke["passed"] and len([a for a in smoke["artifacts"] if "passed" in a]) == 8
    bench = json.loads((rel / "bench.json").read_text())
    assert bench["threads"] == 2 and bench["latency_ms"]["p50"] > 0  # the profile's core count
    # the device's own venv runs the bundle with no TensorFlow installed
    out = subprocess.run([str(rel / "venv/bin/python"), "-c", "import importlib.util as u; "
                          "print(u.find_spec('tensorflow') is None)"], capture_output=True, text=True)
    assert out.stdout.strip() == "True"
    pulled = list((full_bundle / "devices").glob("x86_64-*.json"))
    assert pulled and json.loads(pulled[0].read_text())["release"] == first_deploy


def test_report_gets_a_device_row(first_deploy, full_bundle, cli):
    if not (full_bundle / "bench.json").exists():
        assert cli("bench", full_bundle, "--runs", "20")[0] == 0
    if not (full_bundle / "parity.json").exists():
        assert cli("parity", full_bundle)[0] == 0
    code, out, _ = cli("report", full_bundle)
    rep = json.loads((full_bundle / "report.json").read_text())
    assert rep["devices"] and rep["devices"][0]["profile"] == "x86_64" and rep["devices"][0]["smoke"] == "pass"
    assert "x86_64" in (full_bundle / "report.md").read_text()


def test_failed_smoke_keeps_previous_release(first_deploy, sshd, full_bundle, tmp_path, cli):
    bad = tmp_path / "bad"
    shutil.copytree(full_bundle, bad)
    np.save(bad / "check_tflite-int8.npy", np.load(bad / "check_tflite-int8.npy") + 0.5)  # wrong expectations
    code, _, err = cli("deploy", bad, *_args(sshd))
    assert code == 2 and "previous release stays current" in err and "smoke parity failed" in err
    assert _current(sshd) == first_deploy


def test_killed_deploy_keeps_previous_release(first_deploy, sshd, full_bundle):
    proc = subprocess.Popen([sys.executable, "-m", "edgeport.cli", "deploy", str(full_bundle), *_args(sshd)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    releases = Path(sshd["remote"]) / "releases"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for the device to start installing the new release
        if any((p / ".incomplete").exists() for p in releases.iterdir()):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the deploying machine dies mid-install
    proc.wait()
    assert _current(sshd) == first_deploy
    deadline = time.monotonic() + 120  # the device side runs on to its COMMIT question, gets EOF, stops
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", "sh deploy-.*sh"]).returncode == 0:
        time.sleep(0.2)
    assert _current(sshd) == first_deploy


def test_second_deploy_then_rollback(first_deploy, sshd, full_bundle, cli):
    time.sleep(1.1)  # release ids carry a seconds timestamp
    code, out, err = cli("deploy", full_bundle, *_args(sshd))
    assert code == 0, err
    second = _current(sshd)
    assert second != first_deploy and first_deploy in _releases(sshd)
    assert not any((Path(sshd["remote"]) / "releases" / r / ".incomplete").exists() for r in _releases(sshd))
    code, out, err = cli("rollback", *_args(sshd)[2:])
    assert code == 0, err
    assert _current(sshd) == first_deploy and first_deploy in out


def test_unknown_host_key_refused(sshd, full_bundle, tmp_path, cli):
    (tmp_path / "empty_known_hosts").write_text("")
    args = _args(sshd)
    args[args.index("--known-hosts") + 1] = str(tmp_path / "empty_known_hosts")
    code, _, err = cli("deploy", full_bundle, *args)
    assert code == 2 and "host key not trusted" in err and "ssh-keyscan" in err


def test_bad_host_argument(cli, full_bundle):
    code, _, err = cli("deploy", full_bundle, "--device", "x86_64", "--host", "nouser")
    assert code == 2 and "expected USER@HOST" in err
