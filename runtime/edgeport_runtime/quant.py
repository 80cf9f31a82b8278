"""Affine (de)quantization exactly as TFLite runs it.

What LiteRT 2.3 executes for a float->int8 QUANTIZE op on CPU (XNNPACK, the default delegate) is
``q = rint(x * (1/scale)) + zero_point``: multiply by the float32 reciprocal of the scale, round half to even,
add the zero point, clamp to the integer range. This is *not* TFLite's reference kernel (which divides and
rounds halves away from zero). The toolkit test test_quantize_equals_litert_kernel_at_and_around_ties keeps
this true: on 11,790 values at and 1 ulp around every rounding tie of the int8 range, at five scales, this
formula matches the interpreter on every value, and the reference formula misses at least 10% of them.
DEQUANTIZE is ``(q - zero_point) * scale`` in float32.
"""
from __future__ import annotations

import numpy as np

RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Float -> integer as TFLite does: rint(x * float32(1/scale)) + zero_point, clamped to ``dtype``."""
    if dtype not in RANGES:
        raise ValueError(f"quantize: unsupported dtype {dtype!r}; expected one of {sorted(RANGES)}")
    lo, hi = RANGES[dtype]
    inv = np.float32(1.0) / np.float32(scale)
    with np.errstate(over="ignore", invalid="ignore"):  # +-Inf inputs clamp to the ends of the range
        q = np.rint(np.asarray(x, np.float32) * inv) + np.float32(zero_point)
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float32: ``(q - zero_point) * scale``."""
    return ((np.asarray(q).astype(np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale))
