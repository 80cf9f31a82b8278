"""Turning model outputs into what people read: top-k classes with labels, or reconstruction errors."""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .errors import ModelLoadError


def summarize(x: np.ndarray, y: np.ndarray, task: str, labels: List[str], top: int) -> List[Dict[str, Any]]:
    """One row per sample: ``{"sample", "top": [{"class", "label", "score"}...]}`` for classifiers, or
    ``{"sample", "reconstruction_mse"}`` for autoencoders.

    Raises:
        ModelLoadError: an 'autoencoder' manifest on a model whose outputs are not reconstructions of its inputs.
    """
    if task == "autoencoder":
        if y.shape != (len(x), int(np.prod(x.shape[1:]))):
            raise ModelLoadError(f"the manifest says task 'autoencoder' but the model maps inputs "
                                 f"{list(x.shape[1:])} to outputs {list(y.shape[1:])}, not a reconstruction; the "
                                 "manifest does not belong to this model.")
        err = np.mean((y - x.reshape(len(x), -1)) ** 2, axis=1)
        return [{"sample": i, "reconstruction_mse": float(e)} for i, e in enumerate(err)]
    p = y.reshape(len(y), -1)
    best = np.argsort(-p, axis=1, kind="stable")[:, :top]  # one call for the whole batch
    scores = np.take_along_axis(p, best, axis=1).tolist()
    names = [labels[c] if c < len(labels) else str(c) for c in range(p.shape[1])]
    return [{"sample": i, "top": [{"class": c, "label": names[c], "score": sc} for c, sc in zip(cs, ss)]}
            for i, (cs, ss) in enumerate(zip(best.tolist(), scores))]
