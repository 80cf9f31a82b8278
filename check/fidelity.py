"""Parity without labels: how faithfully an artifact reproduces the Keras model's outputs (fidelity only).

Held-back inputs that calibration never saw are run through the artifact and the Keras original. Without labels
accuracy cannot be measured (the report says so); what can be measured, and is gated:

* classifiers: top-1 agreement with Keras (the recipe's ``min_agreement``, decided with the same one-sided exact
  bounds as with labels), plus max/mean absolute output difference;
* regression outputs: the output-error ratio, RMS(artifact - Keras) / RMS(Keras - its mean): the share of the
  output's own spread that the conversion adds as error (gated at :data:`MAX_OUTPUT_ERROR_RATIO`);
* autoencoders need no labels: the reconstruction MSE ratio of the labelled path applies unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import numpy as np

from . import gate_stats as gs

# int8 output quantization alone adds about step/sqrt(12) of noise, ~0.1-1% of an output's spread with a sane
# calibration; 10% means the artifact no longer tracks the output (e.g. clipped or collapsed ranges). Float
# exports sit far below it (1e-6 relative), so one threshold serves every recipe.
MAX_OUTPUT_ERROR_RATIO = 0.10

ACCURACY_NOT_MEASURED = ("accuracy not measured: the data has no labels (pass --eval with labelled samples to "
                         "measure it); fidelity to the Keras model measured instead")


@dataclass
class Fidelity:
    """What the labelled path's accuracy fields become without labels."""

    metric: str  # agreement | output_error_ratio
    value: float
    keras_value: float
    agreement: float = None
    checks: List[gs.Check] = field(default_factory=list)
    worst_samples: List[int] = field(default_factory=list)


def is_classifier_output(ref: np.ndarray, task: str) -> bool:
    """Top-1 agreement makes sense: a classification task with a score vector (>= 2 entries) per sample."""
    return task == "classification" and ref.ndim == 2 and ref.shape[1] >= 2


def fidelity(y: np.ndarray, ref: np.ndarray, task: str, min_agreement: float, confidence: float,
             worst_n: int = 10) -> Fidelity:
    """Fidelity of artifact outputs ``y`` to Keras outputs ``ref`` (same held-back inputs, no labels)."""
    y2, r2 = y.reshape(len(y), -1), ref.reshape(len(ref), -1)
    if is_classifier_output(r2, task):
        top, ktop = y2.argmax(1), r2.argmax(1)
        n = len(top)
        disagree = int(np.sum(top != ktop))
        agree = 1.0 - disagree / n
        dis = np.flatnonzero(top != ktop)
        diff = np.abs(y2 - r2)
        worst = dis[np.argsort(-np.nan_to_num(diff[dis], nan=np.inf).max(axis=1))][:worst_n].tolist()
        chk = gs.disagreement_check(disagree, n, min_agreement, confidence)
        return Fidelity("agreement", agree, 1.0, agree, [chk], worst)
    err = float(np.sqrt(np.mean((y2.astype(np.float64) - r2) ** 2)))
    spread = float(np.sqrt(np.mean((r2 - r2.mean(axis=0)) ** 2)))
    ratio = err / spread if spread > 0 else (0.0 if err == 0 else float("inf"))
    ok = ratio <= MAX_OUTPUT_ERROR_RATIO  # NaN compares False: fails
    chk = gs.Check("output-error ratio", ratio, None, None, MAX_OUTPUT_ERROR_RATIO, gs.PASS if ok else gs.FAIL,
                   unit="x", message=f"output-error ratio (RMS error / RMS spread of the Keras output) {ratio:.4g} "
                                     f"{'<=' if ok else '>'} {MAX_OUTPUT_ERROR_RATIO:g}")
    per_sample = np.sqrt(np.mean((y2 - r2) ** 2, axis=1))
    worst = np.argsort(-np.nan_to_num(per_sample, nan=np.inf))[:worst_n].tolist()
    return Fidelity("output_error_ratio", ratio, 0.0, None, [chk], worst)
