"""Feature standardization for tabular data, fitted on the training split only and recorded for devices.

Unscaled features (wine: magnesium ~100, hue ~1) train badly; standardizing each feature to mean 0 and
standard deviation 1 fixes that. The statistics must come from the training split alone (test rows must not leak
into preprocessing), so the trainer calls :func:`standardize_splits` right after splitting. They are recorded in
the run's ``preprocessing`` (copied into the bundle manifest), where the runtime's CSV reader applies
``model input = (raw * input_scale + input_offset - feature_mean) / feature_std``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgeport_runtime.sections import Preprocessing

# A feature whose training values are (nearly) constant carries no information; dividing by its tiny std would
# turn float noise into huge inputs, so such features are only centred (std recorded as 1).
MIN_STD = 1e-8


def fit_standardization(x_train: np.ndarray) -> Dict[str, List[float]]:
    """Per-feature mean and std of ``x_train`` (N, F), as JSON-ready lists ``feature_mean`` / ``feature_std``."""
    x = np.asarray(x_train, np.float64).reshape(len(x_train), -1)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < MIN_STD, 1.0, std)
    return {"feature_mean": [float(v) for v in mean], "feature_std": [float(v) for v in std]}


def apply_standardization(x: np.ndarray, stats: Dict[str, Any]) -> np.ndarray:
    """``(x - feature_mean) / feature_std`` per feature, in float32.

    The runtime's CSV reader does exactly these float32 operations on the same recorded numbers, so a device
    reproduces the training inputs bit for bit.
    """
    mean = np.asarray(stats["feature_mean"], np.float32)
    std = np.asarray(stats["feature_std"], np.float32)
    flat = np.asarray(x, np.float32).reshape(len(x), -1)
    return ((flat - mean) / std).reshape(np.shape(x)).astype(np.float32)


def standardize_splits(kind: str, preprocessing: Dict[str, Any], enabled: bool, x_train: np.ndarray,
                       x_val: Optional[np.ndarray], x_test: np.ndarray
                       ) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, Dict[str, Any]]:
    """Standardize tabular splits with statistics of ``x_train``; return the splits and the new preprocessing.

    Only tabular data (N, F) is standardized: images and sequences keep their recorded scaling. The returned
    preprocessing says ``standardized: true/false`` so the run record always tells which happened.
    """
    pre = Preprocessing.from_dict(preprocessing, "dataset preprocessing")
    if kind != "tabular" or x_train.ndim != 2:
        return x_train, x_val, x_test, pre.to_dict()
    if not enabled:
        return x_train, x_val, x_test, replace(pre, standardized=False).to_dict()
    stats = fit_standardization(x_train)
    pre = replace(pre, **stats, standardized=True, standardization_fitted_on="train split")
    x_val = apply_standardization(x_val, stats) if x_val is not None else None
    return apply_standardization(x_train, stats), x_val, apply_standardization(x_test, stats), pre.to_dict()


def describe(preprocessing: Dict[str, Any]) -> Optional[str]:
    """One line for the screen saying whether features were standardized (None for non-tabular data)."""
    pre = Preprocessing.from_dict(preprocessing, "preprocessing")
    if pre.standardized is True:
        n = len(pre.feature_mean or [])
        return (f"standardized {n} features with the training split's mean and std (recorded in train.json "
                "preprocessing; devices apply the same; --no-standardize to opt out)")
    if pre.standardized is False:
        return "features not standardized (--no-standardize)"
    return None


def standardize_like(recorded: Dict[str, Any], kind: str, preprocessing: Dict[str, Any], *arrays: np.ndarray
                     ) -> Tuple[Dict[str, Any], List[np.ndarray]]:
    """Apply the statistics a training run recorded (``recorded``: its train.json preprocessing) to other data.

    For `edgeport convert --data DATA.csv` on a model trained with standardization: calibration and checks must
    see the inputs the model was trained on, standardized with the run's own statistics (never refitted). Data
    that is not tabular, or whose feature count differs (reported later as a shape mismatch), is left as is.
    """
    rec = Preprocessing.from_dict(recorded, "train.json preprocessing")
    if kind != "tabular" or rec.feature_mean is None or not arrays:
        return dict(preprocessing), list(arrays)
    stats = {"feature_mean": rec.feature_mean, "feature_std": rec.feature_std}
    if any(int(np.prod(a.shape[1:])) != len(rec.feature_mean) for a in arrays):
        return dict(preprocessing), list(arrays)
    pre = replace(Preprocessing.from_dict(preprocessing, "dataset preprocessing"), **stats, standardized=True)
    return pre.to_dict(), [apply_standardization(a, stats) for a in arrays]
