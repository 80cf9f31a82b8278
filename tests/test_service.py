"""`edgeport deploy --service`: the systemd unit (checked by systemd-analyze), and the health-gated switch run end
to end against a real OpenSSH server on localhost with the service as a plain background process (there is no
systemd to run it here): a healthy release switches, one whose model fails /health is switched back (exit 1), and
a rollback restarts the service on the older release. Also the device's own choice of configuration coming back
into the bundle and the report.
"""
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import test_deploy
from sshd import free_port as _free_port
from test_deploy import _args, _complete, _current, _releases

from edgeport.devices import deploy as deploy_mod
from edgeport.devices.service import ServiceSpec, render_unit, service_name, systemd_quote
from edgeport_runtime.errors import UsageError

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
sshd = test_deploy.sshd  # the module-scoped OpenSSH fixture: this module gets a server and a device of its own


def _fake_root(tmp_path):
    """A device directory with an executable current/venv/bin/edgeport-run (systemd-analyze checks it exists)."""
    root = tmp_path / "dev ice%$x"  # a space, a specifier and a variable sign: the unit must quote them
    exe = root / "current" / "venv" / "bin" / "edgeport-run"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return root


@pytest.mark.parametrize("scope", ["user", "system"])
def test_unit_passes_systemd_analyze_verify(tmp_path, scope):
    if SYSTEMD_ANALYZE is None:
        pytest.fail("this test needs systemd-analyze: apt-get install -y systemd")
    root = _fake_root(tmp_path)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    unit = render_unit(ServiceSpec(scope=scope, port=8081), str(root), user)
    path = tmp_path / "edgeport.service"
    path.write_text(unit)
    env = dict(os.environ)
    if scope == "user":  # the user manager's runtime directory (no login session here)
        (tmp_path / "xdg").mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
    out = subprocess.run([SYSTEMD_ANALYZE, *(["--user"] if scope == "user" else []), "verify", str(path)],
                         capture_output=True, text=True, env=env)
    # verify exits 0 on warnings too (unknown keys, bad values): a clean unit prints nothing at all
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out.stderr
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start == (f'ExecStart="{str(root).replace("%", "%%")}/current/venv/bin/edgeport-run" "serve" '
                          f'"{str(root).replace("%", "%%").replace("$", "$$")}/current" "--host" "127.0.0.1" '
                          '"--port" "8081"')
    assert "Restart=on-failure" in unit and "--threads" not in unit
    assert ("User=" + user in unit) == (scope == "system")
    # the unit the verify saw points at the missing binary when the path is wrong: it does check
    path.write_text(unit.replace("/current/venv/", "/nowhere/venv/"))
    bad = subprocess.run([SYSTEMD_ANALYZE, *(["--user"] if scope == "user" else []), "verify", str(path)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "is not executable" in bad.stderr


def test_systemd_quote_round_trips_through_systemd_escape():
    # oracle: a hand computation of systemd.service(5)'s quoting rules (backslash escapes inside double quotes,
    # "%%" for a literal %, "$$" for a literal $)
    assert systemd_quote('a "b" \\c %h $HOME') == '"a \\"b\\" \\\\c %%h $$HOME"'
    assert systemd_quote("/opt/$x%i/run", executable=True) == '"/opt/$x%%i/run"'
    with pytest.raises(UsageError, match="control characters"):
        systemd_quote("a\nb")


@pytest.mark.parametrize("field, value, message", [
    ("host", "127.0.0.1; reboot", "--service-host"), ("host", "-oProxy", "--service-host"),
    ("port", 0, "--service-port"), ("port", 70000, "--service-port"), ("health_timeout", 0, "--health-timeout"),
    ("manager", "cron", "--service-manager"), ("scope", "global", "--service-scope"),
    ("name", "a/b", "service name"), ("token_file", "my token", "--service-token-file"),
    ("token_file", "../../etc/shadow", "--service-token-file"),
])
def test_service_spec_refuses_bad_values(field, value, message):
    with pytest.raises(UsageError, match=message):
        ServiceSpec(**{field: value}).check()


def test_unit_passes_the_token_file_resolved_in_the_device_directory():
    unit = render_unit(ServiceSpec(host="0.0.0.0", token_file="secrets/token"), "/home/pi/edgeport", "pi")
    assert '"--host" "0.0.0.0"' in unit and '"--token-file" "/home/pi/edgeport/secrets/token"' in unit
    assert ServiceSpec(token_file="/etc/edgeport/token").conf_line().endswith(" /etc/edgeport/token")
    assert ServiceSpec().conf_line() == "systemd-user edgeport 127.0.0.1 8080 90 -"


def test_service_name_per_device_directory():
    assert service_name("edgeport") == "edgeport"
    assert service_name("models/cam 1") == "edgeport-models-cam-1"


def test_deploy_refuses_bad_service_options_before_contacting_the_device(cli, tmp_path):
    code, _, err = cli("deploy", tmp_path, "--device", "x86_64", "--host", "pi@127.0.0.1", "--port", "1",
                       "--service", "--service-host", "0.0.0.0 x")
    assert code == 2 and "--service-host" in err and "ssh" not in err


# ---- the health-gated switch on the localhost "device" (service = a background process) ----

@pytest.fixture(scope="module")
def service_port(sshd):
    port = _free_port()
    yield port
    pidf = Path(sshd["remote"]) / "service" / f"{service_name(sshd['remote'])}.pid"  # stop what the tests started
    if pidf.is_file():
        try:
            os.kill(int(pidf.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def _svc_args(s, port):
    return [*_args(s), "--service", "--service-manager", "process", "--service-port", str(port),
            "--health-timeout", "60"]


def _health(port):
    """(status, body) of GET /health on the device's service."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _service_pid(s):
    return int((Path(s["remote"]) / "service" / f"{service_name(s['remote'])}.pid").read_text())


@pytest.fixture(scope="module")
def service_deploy(sshd, full_bundle, service_port, tmp_path_factory):
    from edgeport.cli import main

    # gate results first, so the device chooses among gated artifacts (and the report has what it needs)
    if not (full_bundle / "parity.json").exists():
        assert main(["parity", str(full_bundle)]) == 0
    if not (full_bundle / "bench.json").exists():
        assert main(["bench", str(full_bundle), "--runs", "20"]) == 0
    assert main(["deploy", str(full_bundle), *_svc_args(sshd, service_port)]) == 0
    return _current(sshd)


def test_deploy_as_service_switches_when_healthy_and_records_the_choice(service_deploy, sshd, full_bundle,
                                                                         service_port, cli):
    rel = Path(sshd["remote"]) / "releases" / service_deploy
    assert _complete(sshd, service_deploy)
    assert (Path(sshd["remote"]) / "service.conf").read_text().split() == [
        "process", service_name(sshd["remote"]), "127.0.0.1", str(service_port), "60", "-"]
    selected = json.loads((rel / "selected.json").read_text())
    status, body = _health(service_port)
    assert status == 200 and body["status"] == "ok"
    # the service runs the device's choice, and the deploy's bench measured that same configuration
    assert (body["artifact"], body["backend"], body["threads"]) == (
        selected["artifact"], selected["backend"], selected["threads"])
    bench = json.loads((rel / "bench.json").read_text())
    assert (bench["artifact"], bench["backend"], bench["threads"]) == (
        selected["artifact"], selected["backend"], selected["threads"])
    # gated: only artifacts whose parity gate did not fail, each at 1..2 threads (the profile's cores)
    par = json.loads((full_bundle / "parity.json").read_text())
    failed = {a["name"] for a in par["artifacts"] if a["failures"]}
    assert selected["gated"] is True and selected["artifact"] not in failed
    assert not failed & {r["artifact"] for r in selected["table"]}
    assert {r["threads"] for r in selected["table"]} == {1, 2}
    # pulled back into the bundle and shown in the report
    state = next(f for f in (full_bundle / "devices").glob("x86_64-*.json")
                 if json.loads(f.read_text())["release"] == service_deploy)
    assert json.loads((state.with_suffix("") / "selected.json").read_text()) == selected
    code, _, err = cli("report", full_bundle)
    assert code == 0, err
    row = next(d for d in json.loads((full_bundle / "report.json").read_text())["devices"]
               if d["release"] == service_deploy)
    assert row["selected"]["artifact"] == selected["artifact"] and len(row["selection_table"]) == len(
        selected["table"])
    md = (full_bundle / "report.md").read_text()
    assert f"**{selected['artifact']} [{selected['backend']}, " in md


def _tamper_selected_check_outputs(s):
    """before_commit: spoil the recorded check outputs of the artifact the device selected in the new release.
    Smoke and selection already passed on the good ones; the service's /health compares against these."""
    def tamper(rid):
        rel = Path(s["remote"]) / "releases" / rid
        art = json.loads((rel / "selected.json").read_text())["artifact"]
        man = json.loads((rel / "bundle" / "manifest.json").read_text())
        path = rel / "bundle" / next(a["check_outputs"] for a in man["artifacts"] if a["name"] == art)
        np.save(path, np.load(path) + 0.5)
    return tamper


def test_release_failing_health_is_switched_back_and_deploy_exits_1(service_deploy, sshd, full_bundle,
                                                                    service_port, cli, monkeypatch):
    real = deploy_mod._two_phase
    monkeypatch.setattr(deploy_mod, "_two_phase", lambda target, cmd, rid, archive, before_commit=None: real(
        target, cmd, rid, archive, _tamper_selected_check_outputs(sshd)))
    before = set(_releases(sshd))
    old_pid = _service_pid(sshd)
    code, _, err = cli("deploy", full_bundle, *_args(sshd))  # no --service: the device's service.conf still gates
    assert code == 1, err
    (bad,) = set(_releases(sshd)) - before
    assert f"release {bad} did not pass /health" in err and "the check inputs give outputs" in err
    assert f"current is {service_deploy} again" in err and "answers /health again" in err
    assert _current(sshd) == service_deploy
    assert not _complete(sshd, bad) and (Path(sshd["remote"]) / "releases" / bad / ".unhealthy").is_file()
    status, body = _health(service_port)
    assert status == 200 and _service_pid(sshd) != old_pid  # restarted on the previous release
    # the next deploy removes the unhealthy release; it is never made current again
    monkeypatch.setattr(deploy_mod, "_two_phase", real)
    code, out, err = cli("deploy", full_bundle, *_args(sshd))
    assert code == 0, err
    assert bad not in _releases(sshd) and _current(sshd) not in (bad, service_deploy)
    assert f"service {service_name(sshd['remote'])} (process) answers /health" in out
    assert _health(service_port)[0] == 200


def test_rollback_restarts_the_service_on_the_older_release(service_deploy, sshd, service_port, cli):
    cur = _current(sshd)
    assert cur != service_deploy  # the previous test deployed a newer healthy release
    old_pid = _service_pid(sshd)
    code, out, err = cli("rollback", *_args(sshd)[2:])
    assert code == 0, err
    assert _current(sshd) == service_deploy and service_deploy in out
    assert _service_pid(sshd) != old_pid and _health(service_port)[0] == 200
