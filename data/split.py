"""The stratified split every stage uses (train's test/validation split, convert's held-out split)."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from edgeport_runtime.errors import InputError


def stratified_split(x, y, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off ``fraction`` of the samples, stratified by class, fixed by ``seed``."""
    from sklearn.model_selection import train_test_split  # deferred: sklearn takes seconds to import

    try:
        return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as e:  # too few samples for a stratified split
        raise InputError(f"cannot split {len(x)} samples into {fraction:.0%} held out, stratified by class "
                         f"({e}). Give more samples per class or lower the split.") from None
