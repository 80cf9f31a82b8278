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

from .datasets import load_dataset
from .preprocess import standardize_like
from .split import stratified_split

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
    y_train: np.ndarray
    x_val: Optional[np.ndarray]
    y_val: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    labels: List[str]
    preprocessing: Dict[str, Any]
    source: str
    run_dir: Optional[Path] = None
    notes: Dict[str, Any] = field(default_factory=dict)  # the dataset loader's notes (e.g. skipped files)


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


def resolve_data(model: Path, data: Optional[str], seed: int) -> Data:
    """--data (a run directory, a dataset name or path), else the run directory the model sits in."""
    if data is None:
        if is_run_dir(model.parent):
            return load_run_data(model.parent)
        raise UsageError(f"{model}: not inside a training run directory, so there is no training data to "
                         "calibrate on; pass --data RUN_DIR or --data DATASET (a built-in name, .npz, .csv or "
                         "image folder).")
    p = Path(data)
    if p.is_dir() and is_run_dir(p):
        return load_run_data(p)
    # the model's own run (if it sits in one) says which CSV column held the labels and how features were scaled
    run = read_record(model.parent)
    ds = load_dataset(data, seed, label_column=run.get("config", {}).get("label_column"))
    if ds.x_test is not None:
        xtr, ytr, xte, yte = ds.x, ds.y, ds.x_test, ds.y_test
    else:
        xtr, xte, ytr, yte = stratified_split(ds.x, ds.y, 0.2, seed)
    pre, (xtr, xte) = standardize_like(run.get("preprocessing", {}), ds.kind, ds.preprocessing, xtr, xte)
    return Data(xtr, ytr, None, None, xte, yte, "classification", ds.class_names, pre,
                f"dataset {data} (20% held out, seed {seed})", notes=ds.notes)


def calibration_samples(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` training samples stratified by class (proportional, at least one per class), seeded."""
    if n < 1:
        raise UsageError(f"--calibration must be >= 1, got {n}.")
    if n >= len(x):
        return x.copy()
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(1, np.floor(counts / counts.sum() * n).astype(int))
    while take.sum() < n:  # hand out the remainder to the largest classes
        take[np.argmax(counts - take)] += 1
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), min(t, cnt), replace=False)
                          for c, t, cnt in zip(classes, take, counts)])
    return x[np.sort(idx)[:n]]
