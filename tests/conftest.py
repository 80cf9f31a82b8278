"""Shared fixtures: a private dataset cache, quiet TensorFlow, and an in-process CLI runner."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGEPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def cli(capsys):
    """Run `edgeport ARGS...` in-process; return (exit_code, stdout, stderr)."""
    from edgeport.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def make_npz(path, n=60, shape=(8, 8, 1), classes=3, seed=0, **overrides):
    """Write a small learnable .npz dataset (class = brightness level) and return its path."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(0, 0.1, (n, *shape)).astype(np.float32) + y.reshape(-1, *([1] * len(shape))) / classes
    arrays = {"x_train": x, "y_train": y}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A short real training run of the default model on digits (shared by convert/parity tests)."""
    from edgeport.cli import main

    out = tmp_path_factory.mktemp("e2e") / "run"
    code = main(["train", "--epochs", "12", "--quiet", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def full_bundle(trained_run):
    """Every recipe converted from ``trained_run`` through the real CLI (child processes)."""
    from edgeport.cli import main

    out = trained_run.parent / "bundle"
    code = main(["convert", str(trained_run / "model.keras"), "--out", str(out), "--jobs", "2"])
    assert code == 0
    return out
