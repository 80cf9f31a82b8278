"""The run directory: written by `edgeport train`, read back as the data every later stage uses.

This module owns its layout. A run directory holds :data:`MODEL_FILE` (model.keras), :data:`RECORD_FILE`
(train.json: config, task, class names, preprocessing), :data:`TRAIN_FILE` (train.npz: x_train/y_train,
x_val/y_val), :data:`TEST_FILE` (test.npz: x_test/y_test) and :data:`HISTORY_FILE` (history.png). Convert
calibrates and fine-tunes on the training split; parity measures on the held-out split. ``--data`` may instead
name a dataset, split here the same way.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgeport_runtime.errors import InputError, UsageError
from edgeport_runtime.manifest import atomic_write_text

from .preprocess import standardize_like
from .split import stratified_split
from .unlabeled import InputOptions, load_samples

HOLDOUT = 0.2  # share of --data held out for parity when no --eval is given (labelled: stratified)

MODEL_FILE = "model.keras"
RECORD_FILE = "train.json"
TRAIN_FILE = "train.npz"
TEST_FILE = "test.npz"
HISTORY_FILE = "history.png"
RUN_FILES = (MODEL_FILE, RECORD_FILE, TRAIN_FILE, TEST_FILE)  # what later stages read from a run


def is_run_dir(path: Path) -> bool:
    """True when ``path`` is a training run directory (it holds train.json)."""
    return (Path(path) / RECORD_FILE).is_file()


def read_record(run_dir: Path) -> Dict[str, Any]:
    """The run's train.json record ({} when ``run_dir`` is not a run directory)."""
    path = Path(run_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_splits(run_dir: Path, x_train: np.ndarray, y_train: np.ndarray, x_val: Optional[np.ndarray],
                 y_val: Optional[np.ndarray], x_test: np.ndarray, y_test: np.ndarray) -> None:
    """Write train.npz (training + validation split) and test.npz (held-out split), compressed, atomically."""
    _save_npz(Path(run_dir) / TRAIN_FILE, x_train=x_train, y_train=y_train,
              **({"x_val": x_val, "y_val": y_val} if x_val is not None else {}))
    _save_npz(Path(run_dir) / TEST_FILE, x_test=x_test, y_test=y_test)


def write_record(run_dir: Path, record: Dict[str, Any]) -> None:
    """Write train.json atomically (written last by the trainer: its presence marks a complete run)."""
    atomic_write_text(Path(run_dir) / RECORD_FILE, json.dumps(record, indent=2) + "\n")


def _save_npz(path: Path, **arrays) -> None:
    """Compressed .npz streamed to a temp file beside ``path``, renamed over it when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Data:
    """Training split (calibration, fine-tuning), held-out split (evaluation) and what describes them."""

    x_train: np.ndarray
    y_train: Optional[np.ndarray]  # None: the data has no labels (calibration only; parity measures fidelity)
    x_val: Optional[np.ndarray]
    y_val: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]  # None: held-back inputs without labels
    task: str
    labels: List[str]
    preprocessing: Dict[str, Any]
    source: str
    run_dir: Optional[Path] = None
    notes: Dict[str, Any] = field(default_factory=dict)  # the dataset loader's notes (e.g. skipped files)
    eval_source: Optional[str] = None  # --eval: where the labelled held-out samples came from

    @property
    def labelled(self) -> bool:
        """True when the training split has labels (fine-tuning recipes need them)."""
        return self.y_train is not None

    @property
    def accuracy_measurable(self) -> bool:
        """True when the held-out split has labels (parity measures accuracy, else fidelity only)."""
        return self.y_test is not None


def _npz(path: Path, keys) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys if k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read it ({e}); re-run `edgeport train`.") from None


def load_run_data(run_dir: Path) -> Data:
    """The splits a training run stored (train.npz, test.npz) and its train.json description."""
    rec = json.loads((run_dir / RECORD_FILE).read_text())
    tr = _npz(run_dir / TRAIN_FILE, ("x_train", "y_train", "x_val", "y_val"))
    te = _npz(run_dir / TEST_FILE, ("x_test", "y_test"))
    if "x_train" not in tr or "x_test" not in te:
        raise InputError(f"{run_dir}: train.npz/test.npz are missing arrays; re-run `edgeport train`.")
    return Data(tr["x_train"], tr["y_train"], tr.get("x_val"), tr.get("y_val"), te["x_test"], te["y_test"],
                rec.get("task", "classification"), rec.get("class_names", []), rec.get("preprocessing", {}),
                f"training run {run_dir}", run_dir)


def holdout_split(x: np.ndarray, fraction: float, seed: int):
    """Inputs without labels: a seeded random ``fraction`` held back (never the tail of a sorted file)."""
    if len(x) < 2:
        raise InputError(f"only {len(x)} sample(s): need at least 2, some to calibrate on and some held back for "
                         "parity. Give more samples, or a labelled --eval set.")
    perm = np.random.default_rng(seed).permutation(len(x))
    k = max(1, int(round(len(x) * fraction)))
    return x[np.sort(perm[k:])], x[np.sort(perm[:k])]


def resolve_data(model: Path, data: Optional[str], seed: int, opts: Optional[InputOptions] = None,
                 eval_path: Optional[str] = None, model_shape=None) -> Data:
    """--data (a run directory, a dataset name or path, labelled or not), else the run directory of the model.

    Args:
        model: the model file (its run directory, if it sits in one, supplies defaults).
        data: --data as given.
        seed: seeds the held-out split.
        opts: preprocessing of raw sample files (--input-scale, --image-size, ...).
        eval_path: --eval, a labelled set parity measures accuracy on; the whole of --data is then calibration.
        model_shape: one input sample's shape, when known (image size defaults, CSV label detection).
    """
    if data is None and eval_path is None:
        if is_run_dir(model.parent):
            return load_run_data(model.parent)
        raise UsageError(f"{model}: not inside a training run directory, so there is no training data to "
                         "calibrate on; pass --data RUN_DIR or --data DATASET (a built-in name, .npy, .npz, .csv "
                         "or image folder; labels are optional).")
    if data is None:
        raise UsageError("--eval needs --data too: --data gives the calibration samples, --eval the labelled "
                         "samples parity measures accuracy on.")
    p = Path(data)
    if p.is_dir() and is_run_dir(p) and eval_path is None:
        return load_run_data(p)
    # the model's own run (if it sits in one) says which CSV column held the labels and how features were scaled
    run = read_record(model.parent)
    label_column = run.get("config", {}).get("label_column")
    if p.is_dir() and is_run_dir(p):
        rd = load_run_data(p)
        ds_x, ds_y, kind, pre, names, notes = rd.x_train, rd.y_train, "run", rd.preprocessing, rd.labels, {}
        ds_xt = ds_yt = None
    else:
        ds = load_samples(data, opts, seed, label_column=label_column, model_shape=model_shape)
        ds_x, ds_y, ds_xt, ds_yt = ds.x, ds.y, ds.x_test, ds.y_test
        kind, pre, names, notes = ds.kind, ds.preprocessing, ds.class_names, ds.notes
    if eval_path is not None:
        ev = load_samples(eval_path, opts, seed, label_column=label_column, model_shape=model_shape)
        if ev.y is None:
            raise InputError(f"--eval {eval_path}: no labels found; --eval is the labelled set accuracy is measured "
                             "on (npz with x_test/y_test or x_train/y_train, an image folder with class "
                             "subfolders, a CSV with a label column). Without labels, leave --eval out: parity "
                             "then measures fidelity on held-back --data samples.")
        xte, yte = (ev.x_test, ev.y_test) if ev.x_test is not None else (ev.x, ev.y)
        xtr = ds_x if ds_xt is None else np.concatenate([ds_x, ds_xt])
        if ds_xt is None:
            ytr = ds_y
        else:
            ytr = None if ds_y is None or ds_yt is None else np.concatenate([ds_y, ds_yt])
        names = ev.class_names if len(ev.class_names) > len(names) else names
        split = f"--eval {eval_path}"
    elif ds_y is None:
        xtr, xte = holdout_split(ds_x, HOLDOUT, seed)
        ytr = yte = None
        split = f"{HOLDOUT:.0%} held back at random, seed {seed}; no labels"
    elif ds_xt is not None:
        xtr, ytr, xte, yte = ds_x, ds_y, ds_xt, ds_yt
        split = "the dataset's own test split"
    else:
        xtr, xte, ytr, yte = stratified_split(ds_x, ds_y, HOLDOUT, seed)
        split = f"{HOLDOUT:.0%} held out, seed {seed}"
    if kind != "run":
        pre, (xtr, xte) = standardize_like(run.get("preprocessing", {}), kind, pre, xtr, xte)
    return Data(xtr, ytr, None, None, xte, yte, run.get("task", "classification"), names, pre,
                f"dataset {data} ({split})", notes=notes, eval_source=eval_path)


def calibration_samples(x: np.ndarray, y: Optional[np.ndarray], n: int, seed: int) -> np.ndarray:
    """``n`` samples drawn at random (seeded) from all of ``x``; stratified by class (proportional, at least one
    per class) when labels ``y`` exist. Never the first ``n``: a class-sorted file would calibrate on one class."""
    if n < 1:
        raise UsageError(f"--calibration must be >= 1, got {n}.")
    if n >= len(x):
        return x.copy()
    rng = np.random.default_rng(seed)
    if y is None:
        return x[np.sort(rng.choice(len(x), n, replace=False))]
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(1, np.floor(counts / counts.sum() * n).astype(int))
    while take.sum() < n:  # hand out the remainder to the largest classes
        take[np.argmax(counts - take)] += 1
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), min(t, cnt), replace=False)
                          for c, t, cnt in zip(classes, take, counts)])
    return x[np.sort(idx)[:n]]
