"""`edgeport train` through the CLI: a short end-to-end run, reproducibility, Ctrl-C, and bad input."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_npz

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    from edgeport.cli import main

    out = tmp_path_factory.mktemp("runs") / "r"
    code = main(["train", "--max-samples", "600", "--epochs", "3", "--out", str(out), "--quiet", "--seed", "3"])
    return code, out


def test_train_writes_every_output(short_run):
    code, out = short_run
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"model.keras", "train.json", "history.png", "train.npz", "test.npz",
                                               ".edgeport"}
    rec = json.loads((out / "train.json").read_text())
    for key in ("dataset", "splits", "seed", "model", "params", "macs", "epochs_run", "wall_seconds",
                "test_accuracy", "per_class_accuracy", "devices", "versions"):
        assert key in rec, key
    assert rec["devices"] == ["/device:CPU:0"] and rec["versions"]["keras"].startswith("3.")
    # Chance on 10 balanced digit classes is 0.1; 3 epochs of tiny_cnn on 480 training samples reach ~0.88 here
    # (seed 3). 0.5 fails a run that did not learn (wrong labels, broken pipeline) and leaves room for the
    # small numeric differences between CPUs and library builds.
    assert rec["test_accuracy"] > 0.5 and len(rec["per_class_accuracy"]) == 10


def test_test_split_is_disjoint_from_training(short_run):
    _, out = short_run
    tr, te = np.load(out / "train.npz"), np.load(out / "test.npz")
    train_rows = {r.tobytes() for r in np.concatenate([tr["x_train"], tr["x_val"]])}
    assert len(te["x_test"]) == 120  # 20% of 600
    assert not any(r.tobytes() in train_rows for r in te["x_test"])


def test_saved_model_loads_safely_and_reproduces_accuracy(short_run):
    import keras

    _, out = short_run
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    te = np.load(out / "test.npz")
    acc = float((np.asarray(model(te["x_test"])).argmax(1) == te["y_test"]).mean())
    assert acc == pytest.approx(json.loads((out / "train.json").read_text())["test_accuracy"])


def test_same_seed_gives_same_weights(tmp_path, cli):
    args = ["train", "--max-samples", "300", "--epochs", "2", "--quiet", "--seed", "7"]
    assert cli(*args, "--out", tmp_path / "a")[0] == 0
    assert cli(*args, "--out", tmp_path / "b")[0] == 0
    import keras

    wa = keras.saving.load_model(tmp_path / "a" / "model.keras").get_weights()
    wb = keras.saving.load_model(tmp_path / "b" / "model.keras").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(wa, wb))


def test_config_file_supplies_options(tmp_path, cli):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[train]\nmodel = "mlp"\nepochs = 1\nmax-samples = 200\nquiet = true\n')
    code, out, err = cli("train", "--config", cfg, "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "train.json").read_text())["model"] == "mlp"


def test_train_on_user_npz_and_autoencoder(tmp_path, cli):
    data = make_npz(tmp_path / "d.npz", n=90, shape=(12,))
    code, _, err = cli("train", "--dataset", data, "--model", "autoencoder", "--epochs", "2", "--quiet",
                       "--out", tmp_path / "ae")
    assert code == 0, err
    rec = json.loads((tmp_path / "ae" / "train.json").read_text())
    assert rec["task"] == "autoencoder" and rec["test_reconstruction_mse"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "tiny_cnnn"], "unknown model 'tiny_cnnn'. Did you mean 'tiny_cnn'"),
    (["--dataset", "mnits"], "unknown dataset 'mnits'. Did you mean 'mnist'"),
    (["--optimizer", "adma"], "Did you mean 'adam'"),
    (["--augment", "flip,blur"], "unknown augmentation 'blur'"),
    (["--val-split", "0.9"], "--val-split must be in"),
    (["--model", "conv1d"], "model conv1d needs sequences"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, cli, argv, message):
    code, out, err = cli("train", "--epochs", "1", "--quiet", "--out", tmp_path / "x", *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.")]  # no staged leftovers


def test_existing_out_refused_without_force(tmp_path, cli):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    code, _, err = cli("train", "--out", tmp_path / "o", "--epochs", "1")
    assert code == 2 and "pass --force" in err
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"


def test_non_writable_out_refused(tmp_path):
    """Runs the CLI as `nobody` (root writes anywhere, and tests run as root in CI), so the check is real."""
    import shutil
    import tempfile

    if os.geteuid() == 0:
        # pytest's tmp_path is private to root: make a world-traversable parent with a directory nobody can't write
        base = Path(tempfile.mkdtemp(prefix="edgeport-ro-"))
        os.chmod(base, 0o755)
        cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    else:
        base, cmd = tmp_path, []
    try:
        (base / "ro").mkdir(mode=0o555)
        os.chmod(base / "ro", 0o555)
        proc = subprocess.run(cmd + [sys.executable, "-m", "edgeport.cli", "train", "--no-cache", "--out",
                                     str(base / "ro" / "o"), "--epochs", "1"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "is not writable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (base / "ro" / "o").exists()
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def test_out_under_a_file_refused(tmp_path, cli):
    (tmp_path / "f").write_text("")
    code, _, err = cli("train", "--out", tmp_path / "f" / "o", "--epochs", "1")
    assert code == 2 and "cannot create parent directory" in err


def test_config_unknown_key_hint(tmp_path, cli):
    cfg = tmp_path / "t.toml"
    cfg.write_text("epoch = 3\n")
    code, _, err = cli("train", "--config", cfg, "--out", tmp_path / "o")
    assert code == 2 and "unknown key 'epoch'. Did you mean 'epochs'" in err


def test_bad_dataset_file_exit_2(tmp_path, cli):
    bad = make_npz(tmp_path / "one.npz", y_train=np.zeros(60, np.int64))
    code, _, err = cli("train", "--dataset", bad, "--out", tmp_path / "o")
    assert code == 2 and "only one class" in err and not (tmp_path / "o").exists()


def test_help_explains_every_option():
    from edgeport.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    undocumented = [a.dest for a in train._actions if not a.help]
    assert undocumented == []


def test_ctrl_c_stops_cleanly_and_keeps_best_model(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "edgeport.cli", "train", "--dataset", "mnist", "--epochs",
                             "500", "--patience", "0", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines = []
    for line in proc.stdout:  # wait for real progress (epoch 2 started), not for a wall-clock time
        lines.append(line)
        if line.startswith("Epoch 2/"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(lines) + rest
    rec = json.loads((out / "train.json").read_text())
    assert rec["interrupted"] is True and rec["epochs_run"] < 500 and (out / "model.keras").is_file()


def test_one_epoch_is_singular_on_screen(tmp_path, cli):
    code, out, err = cli("train", "--model", "mlp", "--max-samples", "200", "--epochs", "1", "--quiet",
                         "--out", tmp_path / "o")
    assert code == 0, err
    assert "1 epoch (best 1)" in out and "1 epochs" not in out
