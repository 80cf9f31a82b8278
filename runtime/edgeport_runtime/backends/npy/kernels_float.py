"""Float32 kernels and the shape/data-movement ops (dtype-agnostic). Each ``prep_*`` runs once at load and
returns ``fn(inputs) -> outputs``; weights are rearranged there so a call is mostly one matrix product.

Dynamic-range FULLY_CONNECTED / CONV_2D run in kernels_hybrid; any other float op with int8 constant weights
gets them dequantized once at load (``const_float``).
"""
from __future__ import annotations

import numpy as np

from .geometry import im2col, padded, taps, window_count

ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6, ACT_TANH = 0, 1, 2, 3, 4
FLOAT_ACTIVATIONS = (ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6, ACT_TANH)


def activate(y: np.ndarray, act: int) -> np.ndarray:
    """Apply a fused activation to a float array (in place where possible)."""
    if act == ACT_RELU:
        return np.maximum(y, 0, out=y)
    if act == ACT_RELU6:
        return np.clip(y, 0, 6, out=y)
    if act == ACT_RELU_N1_TO_1:
        return np.clip(y, -1, 1, out=y)
    if act == ACT_TANH:
        return np.tanh(y, out=y)
    return y


def const_float(t) -> np.ndarray:
    """A constant as float32: dequantizes int8 weights (dynamic-range recipe), passes float data through."""
    d = t.data
    if d.dtype.kind in "iu" and t.scale is not None:
        shape = [1] * d.ndim
        if t.scale.size > 1:
            shape[t.axis] = -1
        zp = t.zero_point.reshape(shape) if t.zero_point is not None else 0
        return ((d.astype(np.float32) - zp) * t.scale.reshape(shape)).astype(np.float32)
    return d.astype(np.float32)


def _bias(g, op, n_out):
    idx = op.inputs[2] if len(op.inputs) > 2 else -1
    return const_float(g.tensors[idx]) if idx >= 0 else np.zeros(n_out, np.float32)


def prep_conv(g, op):
    w = const_float(g.tensors[op.inputs[1]])  # (O, KH, KW, C)
    o, kh, kw, c = w.shape
    wm = np.ascontiguousarray(w.reshape(o, -1).T)
    b, opts, act = _bias(g, op, o), op.options, op.options.get("FusedActivationFunction", 0)

    def run(ins):
        xp, oh, ow = padded(ins[0], kh, kw, opts)
        y = (im2col(xp, kh, kw, oh, ow, opts) @ wm).reshape(xp.shape[0], oh, ow, o)
        y += b
        return [activate(y, act)]
    return run


def prep_depthwise(g, op):
    w = const_float(g.tensors[op.inputs[1]])[0]  # (KH, KW, C*M)
    kh, kw, cm = w.shape
    b, opts, act = _bias(g, op, cm), op.options, op.options.get("FusedActivationFunction", 0)

    def run(ins):
        x = ins[0]
        m = cm // x.shape[-1]
        if m > 1:  # output channel c*M+k reads input channel c
            x = np.repeat(x, m, axis=-1)
        xp, oh, ow = padded(x, kh, kw, opts)
        y = np.zeros((x.shape[0], oh, ow, cm), np.float32)
        tmp = np.empty_like(y)
        for i, j, v in taps(xp, kh, kw, oh, ow, opts):
            np.multiply(v, w[i, j], out=tmp)
            y += tmp
        y += b
        return [activate(y, act)]
    return run


def prep_fully_connected(g, op):
    w = const_float(g.tensors[op.inputs[1]])  # (O, I)
    wt = np.ascontiguousarray(w.T)
    b, act = _bias(g, op, w.shape[0]), op.options.get("FusedActivationFunction", 0)
    keep = op.options.get("KeepNumDims", False)

    def run(ins):
        x = ins[0]
        y = x.reshape(-1, wt.shape[0]) @ wt
        y += b
        if keep:
            y = y.reshape(*x.shape[:-1], -1)
        return [activate(y, act)]
    return run


def prep_binary(fn):
    def prep(g, op):
        act = op.options.get("FusedActivationFunction", 0)
        return lambda ins: [activate(np.asarray(fn(ins[0], ins[1]), np.float32), act)]
    return prep


def prep_pool(kind):
    def prep(g, op):
        opts, act = op.options, op.options.get("FusedActivationFunction", 0)
        kh, kw = opts["FilterHeight"], opts["FilterWidth"]

        def run(ins):
            x = ins[0]
            if kind == "max":
                xp, oh, ow = padded(x, kh, kw, opts, value=-np.inf)
                y = None
                for _, _, v in taps(xp, kh, kw, oh, ow, opts):
                    y = v.copy() if y is None else np.maximum(y, v, out=y)
            else:
                xp, oh, ow = padded(x, kh, kw, opts)
                y = np.zeros((x.shape[0], oh, ow, x.shape[3]), np.float32)
                for _, _, v in taps(xp, kh, kw, oh, ow, opts):
                    y += v
                y /= window_count(x.shape[1], x.shape[2], kh, kw, opts).astype(np.float32)
            return [activate(y.astype(np.float32), act)]
        return run
    return prep


def axes_of(g, op, rank_hint=None):
    return tuple(int(a) for a in np.atleast_1d(g.tensors[op.inputs[1]].data))


def prep_mean(g, op):
    axes, keep = axes_of(g, op), bool(op.options.get("KeepDims", False))
    return lambda ins: [np.mean(ins[0], axis=tuple(a % ins[0].ndim for a in axes), keepdims=keep,
                                dtype=np.float32)]


def prep_softmax(g, op):
    beta = np.float32(op.options.get("Beta", 1.0))

    def run(ins):
        x = ins[0] * beta
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return [e / e.sum(axis=-1, keepdims=True)]
    return run


def prep_unary(fn):
    return lambda g, op: (lambda ins: [np.asarray(fn(ins[0]), np.float32)])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hard_swish(x):
    return x * np.clip(x + 3, 0, 6) / 6


FLOAT = {
    "CONV_2D": prep_conv, "DEPTHWISE_CONV_2D": prep_depthwise, "FULLY_CONNECTED": prep_fully_connected,
    "ADD": prep_binary(np.add), "SUB": prep_binary(np.subtract), "MUL": prep_binary(np.multiply),
    "AVERAGE_POOL_2D": prep_pool("avg"), "MAX_POOL_2D": prep_pool("max"), "MEAN": prep_mean,
    "SOFTMAX": prep_softmax, "LOGISTIC": prep_unary(_sigmoid), "TANH": prep_unary(np.tanh),
    "HARD_SWISH": prep_unary(_hard_swish), "RELU": prep_unary(lambda x: np.maximum(x, 0)),
    "RELU6": prep_unary(lambda x: np.clip(x, 0, 6)),
}


# ---- shape and data movement: the same for every dtype ----

def prep_reshape(g, op):
    t_out = g.tensors[op.outputs[0]]
    static = list(t_out.signature or t_out.shape)

    def run(ins):
        x = ins[0]
        shape = [int(s) for s in ins[1]] if len(ins) > 1 and ins[1] is not None else \
            list(op.options.get("NewShape", static))
        if -1 not in shape and int(np.prod(shape)) != x.size and shape:
            shape[0] = -1  # a batch baked in at conversion time: keep the rest, let the batch follow the input
        return [x.reshape(shape)]
    return run


def prep_squeeze(g, op):
    dims = tuple(op.options.get("SqueezeDims", []))
    return lambda ins: [np.squeeze(ins[0], axis=tuple(d % ins[0].ndim for d in dims) if dims else None)]


def prep_pad(g, op):
    def run(ins):
        x, p = ins[0], np.asarray(ins[1]).reshape(-1, 2)
        value = ins[2] if len(ins) > 2 and ins[2] is not None else \
            (g.tensors[op.inputs[0]].zero_point[0] if g.tensors[op.inputs[0]].zero_point is not None else 0)
        return [np.pad(x, [tuple(int(v) for v in r) for r in p], constant_values=np.asarray(value).item())]
    return run


def prep_concat(g, op):
    axis, act = op.options.get("Axis", 0), op.options.get("FusedActivationFunction", 0)
    out_t = g.tensors[op.outputs[0]]
    for i in op.inputs:  # int8 concatenation is a plain copy only when every input shares the output's scale
        t = g.tensors[i]
        if out_t.scale is not None and (t.scale is None or t.scale[0] != out_t.scale[0]
                                        or t.zero_point[0] != out_t.zero_point[0]):
            raise NotImplementedError("int8 inputs with a scale or zero point other than the output's")

    def run(ins):
        y = np.concatenate(ins, axis=axis)
        return [activate(y, act) if y.dtype.kind == "f" else y]
    return run


def prep_shape(g, op):
    dt = np.int64 if op.options.get("OutType", 2) == 4 else np.int32
    return lambda ins: [np.asarray(ins[0].shape, dt)]


def prep_strided_slice(g, op):
    o = op.options
    if o.get("EllipsisMask", 0) or o.get("NewAxisMask", 0):
        raise NotImplementedError("STRIDED_SLICE with ellipsis/new-axis masks")

    def run(ins):
        x, begin, end, strides = ins[0], ins[1], ins[2], ins[3]
        sl = []
        for d in range(len(begin)):
            b = None if (o.get("BeginMask", 0) >> d) & 1 else int(begin[d])
            e = None if (o.get("EndMask", 0) >> d) & 1 else int(end[d])
            s = int(strides[d])
            if (o.get("ShrinkAxisMask", 0) >> d) & 1:
                sl.append(int(begin[d]))
            else:
                sl.append(slice(b, e, s))
        return [np.asarray(x[tuple(sl)])]
    return run


def prep_pack(g, op):
    axis = op.options.get("Axis", 0)
    return lambda ins: [np.stack([np.asarray(a) for a in ins], axis=axis)]


def prep_expand_dims(g, op):
    return lambda ins: [np.expand_dims(ins[0], int(np.asarray(ins[1]).reshape(-1)[0]))]


def prep_dequantize(g, op):
    t = g.tensors[op.inputs[0]]

    def run(ins):
        x = ins[0]
        if x.dtype.kind == "f":  # float16 weights
            return [x.astype(np.float32)]
        return [((x.astype(np.float32) - np.float32(t.zero_point[0])) * t.scale[0]).astype(np.float32)]
    return run


MOVE = {"RESHAPE": prep_reshape, "SQUEEZE": prep_squeeze, "PAD": prep_pad, "PADV2": prep_pad,
        "CONCATENATION": prep_concat, "SHAPE": prep_shape, "STRIDED_SLICE": prep_strided_slice,
        "PACK": prep_pack, "DEQUANTIZE": prep_dequantize, "EXPAND_DIMS": prep_expand_dims}
