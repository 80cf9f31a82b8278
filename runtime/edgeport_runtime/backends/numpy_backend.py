"""The pure-numpy TFLite backend: runs a .tflite file where no compiled interpreter has wheels (32-bit Pi OS,
new Pythons). The graph is read and planned once at load; a call walks the planned kernels with numpy only.

Supported: the ops edgeport's model zoo and recipes produce (float32, float16 weights, dynamic-range, int8).
Anything else (an op, a fused activation, a tensor type) is refused at load with ModelLoadError.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np

from ..errors import ModelLoadError
from ..manifest import TensorSpec
from .npy import kernels_float, kernels_hybrid, kernels_int8
from .npy.reader import Graph, Op, read_graph

# Highest op version accepted per op. Higher versions add variants (int16 activations, int4 weights, new
# options) whose semantics this backend does not implement, so they are refused at load rather than guessed;
# int16 / int4 / per-channel activation tensors are refused by type as well.
MAX_VERSION = {"CONV_2D": 6, "DEPTHWISE_CONV_2D": 7, "FULLY_CONNECTED": 12, "ADD": 5, "SUB": 5, "MUL": 7,
               "AVERAGE_POOL_2D": 3, "MAX_POOL_2D": 3, "MEAN": 3, "SOFTMAX": 3, "LOGISTIC": 3, "TANH": 3,
               "HARD_SWISH": 1, "RELU": 3, "RELU6": 3, "QUANTIZE": 3, "DEQUANTIZE": 6, "RESHAPE": 2,
               "SQUEEZE": 2, "PAD": 4, "PADV2": 4, "CONCATENATION": 4, "SHAPE": 1, "STRIDED_SLICE": 8, "PACK": 4,
               "EXPAND_DIMS": 1}
SUPPORTED = sorted(MAX_VERSION)


def _spec(t) -> TensorSpec:
    shape = [None if (i == 0 and s == -1) else int(s) for i, s in enumerate(t.signature)]
    quantized = t.scale is not None and t.scale.size == 1 and t.dtype.kind in "iu"
    return TensorSpec(name=t.name, shape=shape, dtype=t.dtype.name,
                      scale=float(t.scale[0]) if quantized else None,
                      zero_point=int(t.zero_point[0]) if quantized else None)


def _kernel(g: Graph, op: Op, path: str) -> Callable:
    """Pick and prepare the kernel for ``op``; raise ModelLoadError for anything not implemented."""
    def refuse(why):
        raise ModelLoadError(f"{path}: op {op.name} (version {op.version}) {why}; the numpy backend supports "
                             f"{', '.join(SUPPORTED)}. Run this artifact with the litert backend instead.")
    if op.name not in MAX_VERSION:
        refuse("is not supported by the numpy backend")
    if op.version > MAX_VERSION[op.name]:
        refuse(f"is newer than the version the numpy backend implements ({MAX_VERSION[op.name]})")
    first = g.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
    act = op.options.get("FusedActivationFunction", 0)
    if op.name in kernels_float.MOVE:
        return kernels_float.MOVE[op.name](g, op)
    if first is not None and first.dtype == np.int8 and first.scale is not None:
        if act not in kernels_int8.INT8_ACTIVATIONS:
            refuse(f"has fused activation {act}, which the int8 kernels do not implement")
        if first.scale.size != 1:
            refuse("has a per-channel quantized activation input")
        out = g.tensors[op.outputs[0]] if op.outputs else None
        if out is None or out.dtype != np.int8 or out.scale is None or out.scale.size != 1:
            refuse("has an int8 input but not a per-tensor int8 output")
        return kernels_int8.INT8[op.name](g, op)
    if first is not None and first.dtype.kind != "f":
        refuse(f"has {first.dtype.name} input {first.name!r}, which the numpy kernels do not implement")
    if act not in kernels_float.FLOAT_ACTIVATIONS:
        refuse(f"has fused activation {act}, which the float kernels do not implement")
    weights = g.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if op.name in kernels_hybrid.HYBRID and weights is not None and weights.dtype == np.int8:
        return kernels_hybrid.HYBRID[op.name](g, op)
    if op.name == "QUANTIZE":
        return kernels_int8.prep_quantize(g, op)
    return kernels_float.FLOAT[op.name](g, op)


class NumpySession:
    """A planned graph: constants folded at load, then one kernel call per remaining op per run."""

    backend = "numpy"

    def __init__(self, path: str, num_threads: int = 1):
        with open(path, "rb") as f:
            data = f.read()
        g = read_graph(data, str(path))
        self.inputs = [_spec(g.tensors[i]) for i in g.inputs]
        self.outputs = [_spec(g.tensors[i]) for i in g.outputs]
        self.dynamic_batch = all(g.tensors[i].signature[:1] == [-1] for i in g.inputs)
        self._in, self._out = list(g.inputs), list(g.outputs)
        self._in_shapes = [list(g.tensors[i].shape) for i in g.inputs]
        consts = {t.index: t.data for t in g.tensors if t.data is not None}
        self._steps: List[Tuple[Callable, List[int], List[int]]] = []
        for op in g.ops:
            try:
                fn = _kernel(g, op, str(path))
                if all(i < 0 or i in consts for i in op.inputs):  # e.g. float16 weights -> float32: once, here
                    for o, v in zip(op.outputs, fn([consts.get(i) for i in op.inputs])):
                        consts[o] = v
                        g.tensors[o].data = v
                    continue
            except NotImplementedError as e:  # a kernel saw an option/variant it does not implement
                raise ModelLoadError(f"{path}: op {op.name} (version {op.version}) uses {e}, which the numpy "
                                     "backend does not implement. Run this artifact with the litert backend.") from None
            except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:  # e.g. weights without data
                raise ModelLoadError(f"{path}: op {op.name} is malformed ({type(e).__name__}: {e}); the file is "
                                     "corrupt or was not written by the TFLite converter: re-export it.") from None
            self._steps.append((fn, op.inputs, op.outputs))
        self._consts = consts
        # free each intermediate after its last reader
        last = {}
        for k, (_, ins, _) in enumerate(self._steps):
            for i in ins:
                last[i] = k
        keep = set(self._out)
        self._drop = [[i for i in ins if last.get(i) == k and i not in keep and i not in consts]
                      for k, (_, ins, _) in enumerate(self._steps)]

    def run(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """Run one batch (arrays already in the model's input dtypes); return the output arrays."""
        if not self.dynamic_batch and len(arrays[0]) != self._in_shapes[0][0]:
            parts = [self.run([a[i:i + 1] for a in arrays]) for i in range(len(arrays[0]))]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(self._out))]
        values = dict(self._consts)
        for i, a in zip(self._in, arrays):
            values[i] = np.asarray(a)
        for (fn, ins, outs), drop in zip(self._steps, self._drop):
            for o, v in zip(outs, fn([values[i] if i >= 0 else None for i in ins])):
                values[o] = v
            for i in drop:
                values.pop(i, None)
        return [np.ascontiguousarray(values[i]) for i in self._out]


def open_session(backend, path: str, num_threads: int) -> NumpySession:
    """Open a .tflite file with the numpy backend (``num_threads`` is accepted; numpy's BLAS sets its own)."""
    return NumpySession(path, num_threads)
