"""int8 kernels with LiteRT's integer arithmetic: exact int32 accumulation, then requantization.

Accumulation runs as a float matrix product (BLAS) on integer-valued arrays: float32 when the layer's weights
bound every partial sum below 2**24, float64 otherwise (exact below 2**53); the sums are therefore exact integers.
Requantization follows what ai-edge-litert's default interpreter does, op by op (see ``Requant``, ``prep_mul``,
``prep_add_sub``, ``prep_mean``): checked bit for bit against it in the tests.
"""
from __future__ import annotations

import math

import numpy as np

from .geometry import im2col, padded, taps, window_count

ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6 = 0, 1, 2, 3
INT8_ACTIVATIONS = (ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6)


# ---- TFLite's fixed-point helpers (tensorflow/lite/kernels/internal/common.h, quantization_util.cc) ----

def quantize_multiplier(m: float):
    """QuantizeMultiplier: real multiplier -> (int32 q31 multiplier, shift), with std::round (half away)."""
    if m == 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = int(math.floor(abs(frac) * (1 << 31) + 0.5)) * (1 if frac >= 0 else -1)
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _srdhm(a: np.ndarray, b) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    ab = a * np.asarray(b, np.int64)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    t = ab + nudge
    return np.where(t >= 0, t >> 31, -((-t) >> 31))  # C++ integer division truncates toward zero


def _rdbpot(x: np.ndarray, e) -> np.ndarray:
    """RoundingDivideByPOT: x / 2**e rounded half away from zero."""
    e = np.asarray(e, np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > threshold)


def mul_by_quantized_multiplier(x: np.ndarray, q, shift) -> np.ndarray:
    """MultiplyByQuantizedMultiplier (double rounding), vectorized; q/shift may be per-channel arrays."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return _rdbpot(_srdhm(x.astype(np.int64) << left, q), right)


def act_range(t, act: int):
    """CalculateActivationRangeQuantized: the int8 clamp range of a fused activation."""
    scale, zp = np.float32(t.scale[0]), int(t.zero_point[0])

    def q(f):
        return zp + int(_round_half_away(np.float32(f) / scale))
    lo, hi = -128, 127
    if act == ACT_RELU:
        lo = max(lo, q(0.0))
    elif act == ACT_RELU6:
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif act == ACT_RELU_N1_TO_1:
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi


def _round_half_away(x):
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


class Requant:
    """int32 accumulator -> int8 for a conv/FC the way LiteRT's default interpreter does it (XNNPACK): the
    accumulator converted to float32, times the float32 scale ``input_scale * filter_scale / output_scale``
    (per output channel), rounded half to even, plus the output zero point, clamped to the activation range.
    (TFLite's reference kernels use a fixed-point multiplier instead and differ by one step now and then.)
    """

    def __init__(self, in_scale, w_scale, out_t, act):
        self.zp = int(out_t.zero_point[0])
        self.lo, self.hi = act_range(out_t, act)
        out_scale = np.float32(out_t.scale[0])
        self.scale = (np.float32(in_scale) * np.asarray(w_scale, np.float32) / out_scale).astype(np.float32)

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        """int32 accumulators -> int8 outputs."""
        y = acc.astype(np.float32)  # rounds to nearest-even above 2**24, as XNNPACK's int32 -> float cast
        y *= self.scale
        np.rint(y, out=y)
        y += np.float32(self.zp)  # exact: the clamp below keeps only int8-range values
        np.clip(y, self.lo, self.hi, out=y)
        return y.astype(np.int8)


def _gemm_dtype(w: np.ndarray, zx: int):
    """float32 when every partial sum of (x - zx) . w is an integer below 2**24 (so float32 is exact in any
    summation order), else float64 (exact below 2**53). Decided per layer from its weights, at load."""
    max_x = max(abs(-128 - zx), abs(127 - zx))
    bound = max_x * float(np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max())
    return np.float32 if bound < 2 ** 24 else np.float64


def _acc(patches: np.ndarray, wm: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """int32 accumulators: the exact GEMM result (an integer-valued float array) plus the int32 bias."""
    acc = (patches @ wm).astype(np.int32)
    acc += bias
    return acc


def _bias_i(g, op, n):
    idx = op.inputs[2] if len(op.inputs) > 2 else -1
    return g.tensors[idx].data.astype(np.int32) if idx >= 0 else np.zeros(n, np.int32)


def prep_conv(g, op):
    x_t, w_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    w = w_t.data.astype(np.float64) - w_t.zero_point.reshape(-1, 1, 1, 1)
    o, kh, kw, c = w.shape
    zx = int(x_t.zero_point[0])
    dt = _gemm_dtype(w, zx)
    wm = np.ascontiguousarray(w.reshape(o, -1).T, dtype=dt)
    bias, opts = _bias_i(g, op, o), op.options
    rq = Requant(x_t.scale[0], w_t.scale, out_t, opts.get("FusedActivationFunction", 0))

    def run(ins):
        x = ins[0].astype(dt)
        x -= zx  # padding with 0 after this is padding with the zero point
        xp, oh, ow = padded(x, kh, kw, opts)
        return [rq(_acc(im2col(xp, kh, kw, oh, ow, opts), wm, bias)).reshape(xp.shape[0], oh, ow, o)]
    return run


def prep_depthwise(g, op):
    x_t, w_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    w64 = w_t.data[0].astype(np.float64) - w_t.zero_point.reshape(1, 1, -1)  # (KH, KW, C*M)
    kh, kw, cm = w64.shape
    zx = int(x_t.zero_point[0])
    dt = _gemm_dtype(np.moveaxis(w64, -1, 0), zx)  # exactness bound per output channel over its taps
    w = w64.astype(dt)
    bias, opts = _bias_i(g, op, cm), op.options
    rq = Requant(x_t.scale[0], w_t.scale, out_t, opts.get("FusedActivationFunction", 0))

    def run(ins):
        x = ins[0].astype(dt)
        x -= zx
        m = cm // x.shape[-1]
        if m > 1:  # output channel c*M+k reads input channel c
            x = np.repeat(x, m, axis=-1)
        xp, oh, ow = padded(x, kh, kw, opts)
        acc = np.zeros((x.shape[0], oh, ow, cm), dt)
        tmp = np.empty_like(acc)
        for i, j, v in taps(xp, kh, kw, oh, ow, opts):
            np.multiply(v, w[i, j], out=tmp)
            acc += tmp
        acc = acc.astype(np.int32)
        acc += bias
        return [rq(acc)]
    return run


def prep_fully_connected(g, op):
    x_t, w_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    zpw = w_t.zero_point if w_t.zero_point.size > 1 else w_t.zero_point[:1]
    w = w_t.data.astype(np.float64) - zpw.reshape(-1, 1)
    zx = int(x_t.zero_point[0])
    dt = _gemm_dtype(w, zx)
    wt = np.ascontiguousarray(w.T, dtype=dt)
    bias = _bias_i(g, op, w.shape[0])
    keep = op.options.get("KeepNumDims", False)
    rq = Requant(x_t.scale[0], w_t.scale, out_t, op.options.get("FusedActivationFunction", 0))

    def run(ins):
        x = ins[0]
        xf = x.reshape(-1, wt.shape[0]).astype(dt)
        xf -= zx
        y = rq(_acc(xf, wt, bias))
        return [y.reshape(*x.shape[:-1], -1) if keep else y]
    return run


def prep_add_sub(sign):
    """ADD/SUB as TFLite's integer kernel: inputs rescaled to a common 2**20-shifted scale, summed, rescaled."""
    def prep(g, op):
        a_t, b_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
        sa, sb, so = (float(np.float32(t.scale[0])) for t in (a_t, b_t, out_t))
        left_shift = 20
        twice_max = 2 * max(sa, sb)
        qa, ea = quantize_multiplier(sa / twice_max)
        qb, eb = quantize_multiplier(sb / twice_max)
        qo, eo = quantize_multiplier(twice_max / ((1 << left_shift) * so))
        za, zb, zo = int(a_t.zero_point[0]), int(b_t.zero_point[0]), int(out_t.zero_point[0])
        lo, hi = act_range(out_t, op.options.get("FusedActivationFunction", 0))

        def exact(ia, ib):
            a = (ia.astype(np.int64) - za) << left_shift
            b = (ib.astype(np.int64) - zb) << left_shift
            s = mul_by_quantized_multiplier(a, qa, ea) + sign * mul_by_quantized_multiplier(b, qb, eb)
            y = mul_by_quantized_multiplier(s, qo, eo) + zo
            return np.clip(y, lo, hi).astype(np.int8)
        return _pair_table(exact)
    return prep


def _pair_table(exact):
    """A binary int8 op as a 256 x 256 table of its exact results, built once at load: one gather per call."""
    q = np.arange(-128, 128, dtype=np.int64)
    table = exact(q[:, None], q[None, :])

    def run(ins):
        # int8 -> uint8 with the sign bit flipped is value + 128: the table row/column, without a widening copy
        return [table[ins[0].view(np.uint8) ^ np.uint8(0x80), ins[1].view(np.uint8) ^ np.uint8(0x80)]]
    return run


def prep_mul(g, op):
    """MUL as XNNPACK's int8 kernel (LiteRT delegates it): the product of the zero-point-shifted inputs, times the
    float32 scale a_scale * b_scale / out_scale, rounded to nearest-even (TFLite's own fixed-point kernel
    differs from it by one step now and then)."""
    a_t, b_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
    scale = np.float32(np.float32(a_t.scale[0]) * np.float32(b_t.scale[0]) / np.float32(out_t.scale[0]))
    za, zb, zo = int(a_t.zero_point[0]), int(b_t.zero_point[0]), int(out_t.zero_point[0])
    lo, hi = act_range(out_t, op.options.get("FusedActivationFunction", 0))

    def exact(ia, ib):
        p = (ia.astype(np.int32) - za) * (ib.astype(np.int32) - zb)  # |p| <= 256 * 256
        return np.clip(np.rint(p.astype(np.float32) * scale).astype(np.int32) + zo, lo, hi).astype(np.int8)
    return _pair_table(exact)


def prep_pool(kind):
    def prep(g, op):
        opts, out_t = op.options, g.tensors[op.outputs[0]]
        kh, kw = opts["FilterHeight"], opts["FilterWidth"]
        lo, hi = act_range(out_t, opts.get("FusedActivationFunction", 0))

        def run(ins):
            x = ins[0]
            if kind == "max":
                xp, oh, ow = padded(x, kh, kw, opts, value=-128)
                y = None
                for _, _, v in taps(xp, kh, kw, oh, ow, opts):
                    y = v.copy() if y is None else np.maximum(y, v, out=y)
                return [np.clip(y, lo, hi).astype(np.int8)]
            xp, oh, ow = padded(x.astype(np.int64), kh, kw, opts)
            acc = sum(v for _, _, v in taps(xp, kh, kw, oh, ow, opts))
            n = window_count(x.shape[1], x.shape[2], kh, kw, opts)
            y = np.where(acc > 0, (acc + n // 2) // n, -((-acc + n // 2) // n))  # half away from zero
            return [np.clip(y, lo, hi).astype(np.int8)]
        return run
    return prep


def prep_mean(g, op):
    """MEAN as TFLite's int8 kernels: over H, W of a 4-D tensor an int32 sum and one fixed-point multiply plus a
    zero-point bias; any other axes the generic kernel's float32 rescale of the int32 sum."""
    x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    axes = tuple(int(a) for a in np.atleast_1d(g.tensors[op.inputs[1]].data))
    keep = bool(op.options.get("KeepDims", False))
    si, so = np.float32(x_t.scale[0]), np.float32(out_t.scale[0])
    zi, zo = int(x_t.zero_point[0]), int(out_t.zero_point[0])

    def run(ins):
        x = ins[0]
        ax = tuple(sorted(a % x.ndim for a in axes))
        n = int(np.prod([x.shape[a] for a in ax]))
        acc = np.sum(x.astype(np.int64), axis=ax, keepdims=keep)
        if keep and x.ndim == 4 and ax == (1, 2):  # the optimized kernel only takes keep_dims 4-D H,W
            q, e = quantize_multiplier(float(si / (np.float32(n) * so)))  # float32 arithmetic, as TFLite's
            bias = zo - int(_round_half_away(np.float32(zi) * si / so))
            y = mul_by_quantized_multiplier(acc, q, e) + bias
        else:
            scale = np.float32(si / so)
            bias = np.float32(-zi) * scale
            mean = acc.astype(np.float32) / np.float32(n)
            y = _round_half_away((mean * scale + bias).astype(np.float32)).astype(np.int64) + zo
        return [np.clip(y, -128, 127).astype(np.int8)]
    return run


def prep_softmax(g, op):
    """Softmax int8 as LiteRT's LUT kernel: float32 exp table over input steps, sequential float32 sum."""
    x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    beta = np.float32(op.options.get("Beta", 1.0))
    table = np.exp(np.float32(-x_t.scale[0] * beta) * np.arange(255, -1, -1, dtype=np.float32)).astype(np.float32)
    so, zo = np.float32(out_t.scale[0]), int(out_t.zero_point[0])

    def run(ins):
        x = ins[0].astype(np.int64)
        mx = x.max(axis=-1, keepdims=True)
        e = table[255 - (mx - x)]  # exp(scale * beta * (x - max))
        total = np.add.accumulate(e, axis=-1, dtype=np.float32)[..., -1:]
        inv = (np.float32(1.0) / (total * so)).astype(np.float32)
        y = np.rint((e * inv).astype(np.float32)).astype(np.int64) + zo
        return [np.clip(y, -128, 127).astype(np.int8)]
    return run


def _lut(fn):
    """Elementwise op through a 256-entry table built in float32, as LiteRT's int8 LUT kernels do."""
    def prep(g, op):
        x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        q = np.arange(-128, 128, dtype=np.float32)
        f = fn(np.float32(x_t.scale[0]) * (q - np.float32(x_t.zero_point[0]))).astype(np.float32)
        t = _round_half_away((f / np.float32(out_t.scale[0])).astype(np.float32)) + out_t.zero_point[0]
        table = np.clip(t, -128, 127).astype(np.int8)
        return lambda ins: [table[ins[0].astype(np.int64) + 128]]
    return prep


def prep_quantize(g, op):
    x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    so, zo = np.float32(out_t.scale[0]), int(out_t.zero_point[0])
    info = np.iinfo(out_t.dtype)
    if x_t.dtype.kind == "f":  # as LiteRT executes it: rint(x * (1/scale)) + zero_point, halves to even
        inv = np.float32(1.0) / so
        return lambda ins: [np.clip(np.rint(ins[0] * inv) + zo, info.min, info.max).astype(out_t.dtype)]
    # requantize int8 -> int8 (scale change)
    q, e = quantize_multiplier(float(np.float64(x_t.scale[0]) / np.float64(so)))
    zi = int(x_t.zero_point[0])
    return lambda ins: [np.clip(mul_by_quantized_multiplier(ins[0].astype(np.int64) - zi, q, e) + zo,
                                info.min, info.max).astype(out_t.dtype)]


def prep_relu(lo_f, hi_f):
    def prep(g, op):
        x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        if x_t.scale[0] == out_t.scale[0] and x_t.zero_point[0] == out_t.zero_point[0]:
            lo, hi = act_range(out_t, ACT_RELU6 if hi_f == 6 else ACT_RELU)
            return lambda ins: [np.clip(ins[0], lo, hi).astype(np.int8)]
        return _lut(lambda v: np.clip(v, lo_f, hi_f))(g, op)
    return prep


INT8 = {
    "CONV_2D": prep_conv, "DEPTHWISE_CONV_2D": prep_depthwise, "FULLY_CONNECTED": prep_fully_connected,
    "ADD": prep_add_sub(1), "SUB": prep_add_sub(-1), "MUL": prep_mul,
    "AVERAGE_POOL_2D": prep_pool("avg"), "MAX_POOL_2D": prep_pool("max"), "MEAN": prep_mean,
    "SOFTMAX": prep_softmax, "LOGISTIC": _lut(lambda v: 1 / (1 + np.exp(-v))), "TANH": _lut(np.tanh),
    "HARD_SWISH": _lut(lambda v: v * np.clip(v + 3, 0, 6) / 6), "QUANTIZE": prep_quantize,
    "RELU": prep_relu(0.0, np.inf), "RELU6": prep_relu(0.0, 6.0),
}
