"""Window geometry shared by the float and int8 kernels: TFLite padding, im2col patches, pooling windows."""
from __future__ import annotations

from typing import Tuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

SAME, VALID = 0, 1  # tflite.Padding


def pad_amounts(size: int, k: int, stride: int, dilation: int, padding: int) -> Tuple[int, int, int]:
    """(output size, pad before, pad after) along one spatial axis, as TFLite computes them."""
    eff = (k - 1) * dilation + 1
    if padding == SAME:
        out = (size + stride - 1) // stride
        total = max((out - 1) * stride + eff - size, 0)
        return out, total // 2, total - total // 2
    return (size - eff + stride) // stride, 0, 0


def padded(x: np.ndarray, kh: int, kw: int, opts, value=0) -> Tuple[np.ndarray, int, int]:
    """``x`` (NHWC) padded for a kh x kw window with the op's strides/dilations/padding; also (out_h, out_w)."""
    sh, sw = opts.get("StrideH", 1), opts.get("StrideW", 1)
    dh, dw = opts.get("DilationHFactor", 1), opts.get("DilationWFactor", 1)
    oh, ph0, ph1 = pad_amounts(x.shape[1], kh, sh, dh, opts.get("Padding", VALID))
    ow, pw0, pw1 = pad_amounts(x.shape[2], kw, sw, dw, opts.get("Padding", VALID))
    if ph0 or ph1 or pw0 or pw1:
        x = np.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)), constant_values=value)
    return x, oh, ow


def taps(xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, opts):
    """Yield (i, j, view) for each filter tap: the strided (N, oh, ow, C) slice of padded input ``xp``."""
    sh, sw = opts.get("StrideH", 1), opts.get("StrideW", 1)
    dh, dw = opts.get("DilationHFactor", 1), opts.get("DilationWFactor", 1)
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw, :]


def im2col(xp: np.ndarray, kh: int, kw: int, oh: int, ow: int, opts) -> np.ndarray:
    """Patches (N*oh*ow, kh*kw*C) in the filter's (KH, KW, C) order, so conv is one 2-D matrix product."""
    n, c = xp.shape[0], xp.shape[3]
    if kh == 1 and kw == 1:
        return np.ascontiguousarray(next(taps(xp, 1, 1, oh, ow, opts))[2]).reshape(n * oh * ow, c)
    sh, sw = opts.get("StrideH", 1), opts.get("StrideW", 1)
    dh = opts.get("DilationHFactor", 1)
    if opts.get("DilationWFactor", 1) != 1 or not xp.flags.c_contiguous:
        return np.concatenate([v for _, _, v in taps(xp, kh, kw, oh, ow, opts)], axis=-1).reshape(n * oh * ow, -1)
    # one filter row at a time: its KW*C inputs are contiguous in memory, so each copy moves long runs
    # (copying tap by tap moves runs of only C values and is ~6x slower)
    out = np.empty((n, oh, ow, kh, kw * c), xp.dtype)
    s0, s1, s2, s3 = xp.strides
    for i in range(kh):
        row = xp[:, i * dh:]
        out[:, :, :, i, :] = as_strided(row, (n, oh, ow, kw * c), (s0, sh * s1, sw * s2, s3), writeable=False)
    return out.reshape(n * oh * ow, kh * kw * c)


def window_count(h: int, w: int, kh: int, kw: int, opts) -> np.ndarray:
    """How many real (not padding) input cells each pooling window covers: shape (1, oh, ow, 1)."""
    ones = np.ones((1, h, w, 1), np.int64)
    xp, oh, ow = padded(ones, kh, kw, opts)
    return sum(v for _, _, v in taps(xp, kh, kw, oh, ow, opts))
