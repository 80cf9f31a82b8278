"""Affine (de)quantization exactly as TFLite does it.

TFLite's reference QUANTIZE kernel computes ``q = round(x / scale) + zero_point`` with ``round`` rounding halves
away from zero (std::round), then clamps to the integer type's range; DEQUANTIZE computes
``(q - zero_point) * scale``. Both run in float32. Matching this order matters: ``round(x/s) + zp`` and
``round(x/s + zp)`` differ at exact halves for negative values.
"""
from __future__ import annotations

import numpy as np

_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def round_half_away(v: np.ndarray) -> np.ndarray:
    """Round to nearest, halves away from zero (C's round(); numpy's rint rounds halves to even)."""
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Float -> integer with TFLite's rounding (half away from zero) and clamping to ``dtype``'s range."""
    if dtype not in _RANGES:
        raise ValueError(f"quantize: unsupported dtype {dtype!r}; expected one of {sorted(_RANGES)}")
    lo, hi = _RANGES[dtype]
    q = round_half_away(np.asarray(x, np.float32) / np.float32(scale)) + np.int32(zero_point)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float32: ``(q - zero_point) * scale``."""
    return ((np.asarray(q).astype(np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale))
