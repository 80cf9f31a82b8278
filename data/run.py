"""The run directory `edgeport train` writes, read back as the data every later stage uses.

A run directory holds model.keras, train.json (config, task, class names, preprocessing), train.npz
(x_train/y_train, x_val/y_val) and test.npz (x_test/y_test). Convert calibrates and fine-tunes on the training
split; parity measures on the held-out split. ``--data`` may instead name a dataset, split here the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgeport_runtime.errors import InputError, UsageError

from .datasets import load_dataset
from .preprocess import standardize_like
from .split import stratified_split


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
    rec = json.loads((run_dir / "train.json").read_text())
    tr = _npz(run_dir / "train.npz", ("x_train", "y_train", "x_val", "y_val"))
    te = _npz(run_dir / "test.npz", ("x_test", "y_test"))
    if "x_train" not in tr or "x_test" not in te:
        raise InputError(f"{run_dir}: train.npz/test.npz are missing arrays; re-run `edgeport train`.")
    return Data(tr["x_train"], tr["y_train"], tr.get("x_val"), tr.get("y_val"), te["x_test"], te["y_test"],
                rec.get("task", "classification"), rec.get("class_names", []), rec.get("preprocessing", {}),
                f"training run {run_dir}", run_dir)


def resolve_data(model: Path, data: Optional[str], seed: int) -> Data:
    """--data (a run directory, a dataset name or path), else the run directory the model sits in."""
    if data is None:
        if (model.parent / "train.json").is_file():
            return load_run_data(model.parent)
        raise UsageError(f"{model}: not inside a training run directory, so there is no training data to "
                         "calibrate on; pass --data RUN_DIR or --data DATASET (a built-in name, .npz, .csv or "
                         "image folder).")
    p = Path(data)
    if p.is_dir() and (p / "train.json").is_file():
        return load_run_data(p)
    # the model's own run (if it sits in one) says which CSV column held the labels and how features were scaled
    run_json = model.parent / "train.json"
    run = json.loads(run_json.read_text()) if run_json.is_file() else {}
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
