"""Train-side safety: --force only replaces edgeport's own output, bad data and configs fail up front, a diverging
run writes nothing, SIGTERM behaves like Ctrl-C, leftovers of killed runs are cleaned up."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_npz

from edgeport.core.fsutil import MARKER, check_replaceable_file, read_marker, write_marker
from edgeport_runtime.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--model", "mlp", "--epochs", "1", "--quiet", "--val-split", "0"]


def _one_line_exit_2(code, err, *needles):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_force_on_unmarked_dir_refused_and_files_kept(tmp_path, cli):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    code, _, err = cli("train", "--out", precious, "--force", *QUICK)
    _one_line_exit_2(code, err, "not made by edgeport", MARKER)
    assert (precious / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("target", ["cwd", "parent_of_cwd", "root", "home"])
def test_force_on_protected_dir_refused(tmp_path, cli, monkeypatch, target):
    work = tmp_path / "w"
    work.mkdir()
    write_marker(work, "train")  # even edgeport's marker does not make these replaceable
    monkeypatch.chdir(work)
    out = {"cwd": ".", "parent_of_cwd": "..", "root": "/", "home": str(Path.home())}[target]
    code, _, err = cli("train", "--out", out, "--force", *QUICK)
    _one_line_exit_2(code, err, "refusing to replace it")
    assert (work / MARKER).is_file()


def test_force_on_dir_holding_the_dataset_refused(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "train")
    data = make_npz(run / "d.npz")
    code, _, err = cli("train", "--dataset", data, "--out", run, "--force", *QUICK)
    _one_line_exit_2(code, err, "holds the input")
    assert data.is_file()


def test_out_in_proc_refused_before_training(tmp_path, cli):
    code, out, err = cli("train", "--out", "/proc/edgeport-x", *QUICK)
    _one_line_exit_2(code, err, "/proc", "not writable")
    assert "Epoch" not in out


def test_force_replaces_marked_run_and_removes_dead_partials(tmp_path, cli):
    data = make_npz(tmp_path / "d.npz", n=60, shape=(6,))
    out = tmp_path / "run"
    code, _, err = cli("train", "--dataset", data, "--out", out, *QUICK)
    assert code == 0, err
    marker = read_marker(out)
    assert marker["command"] == "train" and marker["made_by"] == "edgeport"
    # a run SIGKILLed while saving leaves its staged directory; its creator is dead, so the next run removes it
    stale = tmp_path / ".run.abc123.partial"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"made_by": "edgeport", "command": "train", "pid": _dead_pid()}))
    live = tmp_path / ".run.def456.partial"  # a concurrent run still writing: must survive
    live.mkdir()
    writer = subprocess.Popen(["sleep", "300"])
    (live / MARKER).write_text(json.dumps({"made_by": "edgeport", "command": "train", "pid": writer.pid}))
    (out / "model.keras").write_bytes(b"old")
    try:
        code, _, err = cli("train", "--dataset", data, "--out", out, "--force", *QUICK)
    finally:
        writer.kill()
        writer.wait()
    assert code == 0, err
    assert (out / "model.keras").read_bytes() != b"old"
    assert not stale.exists() and live.is_dir()


def test_nonfinite_loss_stops_and_writes_no_model(tmp_path, cli):
    x = np.full((60, 6), 3e38, np.float32)  # finite float32, but the first Dense overflows to inf -> NaN loss
    x[::2] *= -1
    np.savez(tmp_path / "huge.npz", x_train=x, y_train=np.arange(60) % 2)
    # --no-standardize: standardization (on by default for feature vectors) would scale these inputs back to +-1
    code, _, err = cli("train", "--dataset", tmp_path / "huge.npz", "--out", tmp_path / "o", "--no-standardize",
                       *QUICK)
    _one_line_exit_2(code, err, "diverged", "no model was written")
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def _bad_npz(tmp_path, case):
    p = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 6), dtype=np.float32), np.arange(40) % 2
    if case == "nan_x_test":
        xt = x[:10].copy()
        xt[3, 2] = np.nan
        np.savez(p, x_train=x, y_train=y, x_test=xt, y_test=y[:10])
    elif case == "huge_label":
        np.savez(p, x_train=x, y_train=np.where(y == 1, 2_000_000_000, 0))
    elif case == "y_test_only":
        np.savez(p, x_train=x, y_train=y, y_test=y[:10])
    elif case == "scalar_x":
        np.savez(p, x_train=np.float32(1.0), y_train=y)
    elif case == "text":
        p.write_text("x_train,y_train\n1,2\n")
    return p


@pytest.mark.parametrize("case, needle", [
    ("nan_x_test", "x_test contains NaN"),
    ("huge_label", "must be < 10,000"),
    ("y_test_only", "y_test given without x_test"),
    ("scalar_x", "x_train must hold one sample per row"),
    ("text", "not a .npz file"),
])
def test_bad_npz_exit_2_up_front(tmp_path, cli, case, needle):
    code, out, err = cli("train", "--dataset", _bad_npz(tmp_path, case), "--out", tmp_path / "o", *QUICK)
    _one_line_exit_2(code, err, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("line, needle", [
    ('epochs = "three"', "epochs must be an integer, got 'three'"),
    ("lr = true", "lr must be a number"),
    ('augment = "flip"', "augment must be a list of strings"),
])
def test_config_wrong_type_names_key(tmp_path, cli, line, needle):
    cfg = tmp_path / "t.toml"
    cfg.write_text(line + "\n")
    code, _, err = cli("train", "--config", cfg, "--out", tmp_path / "o")
    _one_line_exit_2(code, err, needle)


def test_internal_error_exits_3_not_gate_code(monkeypatch, cli, tmp_path):
    import edgeport.train.cli as tcli

    def boom(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(tcli, "train_main", boom)
    code, _, err = cli("train", "--out", tmp_path / "o")
    assert code == 3 and "internal error: RuntimeError: simulated bug" in err


def test_sigterm_stops_training_and_keeps_best_model(tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "edgeport.cli", "train", "--model", "mlp", "--epochs", "500",
                             "--patience", "0", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            cwd=ROOT)
    lines = []
    for line in proc.stdout:  # wait for real progress (epoch 2 started), not for a wall-clock time
        lines.append(line)
        if line.startswith("Epoch 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "SIGTERM: stopping after this batch" in rest
    rec = json.loads((out / "train.json").read_text())
    assert rec["interrupted"] is True and rec["epochs_run"] < 500
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_archive_helper_replaces_only_edgeport_archives(tmp_path):
    import tarfile

    other = tmp_path / "notes.tar.gz"
    with tarfile.open(other, "w:gz") as t:
        (tmp_path / "n.txt").write_text("x")
        t.add(tmp_path / "n.txt", arcname="n.txt")
    with pytest.raises(UsageError, match="not an edgeport archive"):
        check_replaceable_file(other, force=True)
    with pytest.raises(UsageError, match="already exists; pass --force"):
        check_replaceable_file(other)
    ours = tmp_path / "b.tar.gz"
    (tmp_path / "edgeport-b-pi4").mkdir()
    with tarfile.open(ours, "w:gz") as t:
        t.add(tmp_path / "edgeport-b-pi4", arcname="edgeport-b-pi4")
    assert check_replaceable_file(ours, force=True) == ours
    with pytest.raises(UsageError, match="is the input"):
        check_replaceable_file(ours, inputs=[ours], force=True)
    with pytest.raises(UsageError, match="not writable"):
        check_replaceable_file("/proc/x.tar.gz")


def test_trainconfig_check_rejects_wrong_types_in_code():
    from edgeport.train.trainer import TrainConfig

    with pytest.raises(UsageError, match="epochs must be an integer, got 'three'"):
        TrainConfig(epochs="three").check()
    with pytest.raises(UsageError, match="image-size must be a list of integers"):
        TrainConfig(image_size=[32, "32"]).check()
