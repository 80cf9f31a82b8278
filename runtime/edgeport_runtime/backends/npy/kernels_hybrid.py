"""Dynamic-range ("hybrid") FULLY_CONNECTED and CONV_2D: float activations, int8 weights.

LiteRT's default interpreter runs these through XNNPACK's dynamically-quantized path: each input row (FC) or
image (conv) is quantized to int8 with its own asymmetric scale and zero point, multiplied with the int8 weights
in exact int32, and the sum is scaled back to float. Emulated here step by step in float32 so the outputs match
LiteRT to float rounding; dequantizing the weights instead would differ by the activation rounding (~1e-3).
"""
from __future__ import annotations

import numpy as np

from .geometry import im2col, padded
from .kernels_float import activate


def _qparams(lo: np.ndarray, hi: np.ndarray):
    """XNNPACK's asymmetric int8 parameters per row from its min/max: (multiplier, step, zero point)."""
    f32 = np.float32
    rmin = np.minimum(f32(0), lo).astype(f32)
    rmax = np.maximum(f32(0), hi).astype(f32)
    same = rmin == rmax
    width = np.where(same, f32(1), rmax - rmin).astype(f32)
    scale = np.where(same, f32(1), f32(255) / width).astype(f32)  # the quantization multiplier
    rmin_s, rmax_s = (rmin * scale).astype(f32), (rmax * scale).astype(f32)
    zp = np.where((f32(-128) + rmin_s) + (f32(127) + rmax_s) > 0, f32(-128) - rmin_s, f32(127) - rmax_s)
    zp = np.rint(np.clip(zp.astype(f32), -128, 127)).astype(np.int32)
    step = (f32(1) / scale).astype(f32)  # what the GEMM output is scaled back by
    mult = (f32(1) / step).astype(f32)  # what the f32 -> int8 conversion multiplies by
    return mult, step, zp


def _quantize_rows(x2: np.ndarray):
    """(rows, k) float32 -> int8-valued float32 (minus zero point), per-row step."""
    mult, step, zp = _qparams(x2.min(axis=1), x2.max(axis=1))
    zp_f = zp.astype(np.float32)[:, None]
    y = x2 * mult[:, None]
    y = np.clip(y, np.float32(-128) - zp_f, np.float32(127) - zp_f)
    return np.rint(y), step  # (q - zp) is what multiplies the weights


def _weights(t):
    """int8 weights as float32 (exact) and the per-output-channel float32 scale."""
    w = t.data.astype(np.float32)
    scale = t.scale.astype(np.float32)
    return w, scale if scale.size > 1 else np.full(w.shape[0], scale[0], np.float32)


def _bias(g, op, n):
    idx = op.inputs[2] if len(op.inputs) > 2 else -1
    return g.tensors[idx].data.astype(np.float32) if idx >= 0 else np.zeros(n, np.float32)


def _finish(acc, step_rows, kscale, bias, act):
    """float32(acc) * input step * filter scale + bias, in XNNPACK's order."""
    y = np.rint(acc).astype(np.int32).astype(np.float32)  # acc is integer-valued; exact below 2**24
    y *= step_rows
    y *= kscale
    y += bias
    return activate(y, act)


def prep_fully_connected(g, op):
    w, kscale = _weights(g.tensors[op.inputs[1]])
    wt = np.ascontiguousarray(w.T.astype(np.float64))
    bias, act = _bias(g, op, w.shape[0]), op.options.get("FusedActivationFunction", 0)
    keep = op.options.get("KeepNumDims", False)

    def run(ins):
        x = ins[0]
        q, step = _quantize_rows(x.reshape(-1, wt.shape[0]).astype(np.float32))
        y = _finish(q.astype(np.float64) @ wt, step[:, None], kscale, bias, act)
        return [y.reshape(*x.shape[:-1], -1) if keep else y]
    return run


def prep_conv(g, op):
    w, kscale = _weights(g.tensors[op.inputs[1]])  # (O, KH, KW, C)
    o, kh, kw, c = w.shape
    wm = np.ascontiguousarray(w.reshape(o, -1).T.astype(np.float64))
    bias, opts, act = _bias(g, op, o), op.options, op.options.get("FusedActivationFunction", 0)

    def run(ins):
        x = ins[0]
        n = x.shape[0]
        q, step = _quantize_rows(x.reshape(n, -1).astype(np.float32))  # one scale per image
        xp, oh, ow = padded(q.reshape(x.shape).astype(np.float64), kh, kw, opts)  # zero = the zero point
        acc = (im2col(xp, kh, kw, oh, ow, opts) @ wm).reshape(n, oh, ow, o)
        return [_finish(acc, step[:, None, None, None], kscale, bias, act)]
    return run


HYBRID = {"FULLY_CONNECTED": prep_fully_connected, "CONV_2D": prep_conv}
