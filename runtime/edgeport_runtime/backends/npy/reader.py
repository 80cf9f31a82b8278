"""Read a .tflite flatbuffer into a plan: tensors (shape, dtype, quantization, constant data) and operators.

Uses the ``tflite`` schema package (pure Python, generated from TFLite's schema.fbs) on top of ``flatbuffers``.
Nothing in the file is executed: operators are looked up by name in the kernel table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from ...errors import ModelLoadError

# TensorType enum -> numpy dtype (the types edgeport's recipes produce, plus a few harmless extras)
_DTYPES = {
    tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32, tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT16: np.int16, tflite.TensorType.INT8: np.int8, tflite.TensorType.BOOL: np.bool_,
}


@dataclass
class Tensor:
    """One tensor of the graph; ``data`` is set for constants (weights, biases, shapes)."""

    index: int
    name: str
    shape: List[int]
    signature: List[int]
    dtype: Any
    scale: Optional[np.ndarray] = None  # float32 per-tensor (size 1) or per-channel
    zero_point: Optional[np.ndarray] = None
    axis: int = 0  # quantized dimension of per-channel tensors
    data: Optional[np.ndarray] = None


@dataclass
class Op:
    """One operator: builtin name, version, tensor indices (-1 = optional input absent) and decoded options."""

    name: str
    version: int
    inputs: List[int]
    outputs: List[int]
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """Subgraph 0 of a model."""

    tensors: List[Tensor]
    ops: List[Op]
    inputs: List[int]
    outputs: List[int]


# BuiltinOptions union tag -> options class name (e.g. 8 -> "FullyConnectedOptions"), from the schema package
_OPTION_CLASSES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_") and isinstance(v, int)}


def _options(op) -> Dict[str, Any]:
    """Decode the builtin options table into a dict of its fields (scalars, and vectors as lists of ints)."""
    table = op.BuiltinOptions()
    cls = getattr(tflite, _OPTION_CLASSES.get(op.BuiltinOptionsType(), ""), None)
    if table is None or cls is None:
        return {}
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    out = {}
    for attr in dir(obj):
        if not attr[0].isupper() or attr.startswith("GetRoot") or attr == "Init" or attr.endswith(
                ("AsNumpy", "Length", "IsNone")) or "BufferHas" in attr:
            continue
        try:
            out[attr] = getattr(obj, attr)()
        except TypeError:  # a vector field: its accessor takes an index; read it whole instead
            np_attr = getattr(obj, attr + "AsNumpy", None)
            if np_attr is not None:
                v = np_attr()
                out[attr] = [] if isinstance(v, int) else [int(i) for i in v]
    return out


def _vec(getter) -> List[int]:
    v = getter()
    return [] if isinstance(v, int) else [int(i) for i in v]


def read_graph(data: bytes, path: str) -> Graph:
    """Parse the flatbuffer ``data``; raise ModelLoadError naming ``path`` on anything malformed."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TFLite flatbuffer (missing the TFL3 identifier); "
                             "the file is corrupt, truncated or not a .tflite model.")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        sg = model.Subgraphs(0)
        buffers = []
        for i in range(model.BuffersLength()):
            b = model.Buffers(i)
            off, size = (b.Offset(), b.Size()) if hasattr(b, "Offset") else (0, 0)
            if off > 1:  # large models keep buffers after the flatbuffer, addressed by file offset
                if off + size > len(data):
                    raise ValueError(f"buffer {i} points past the end of the file")
                buffers.append(np.frombuffer(data, np.uint8, size, off))
            else:
                d = b.DataAsNumpy()
                buffers.append(None if isinstance(d, int) else d)
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            ttype = t.Type()
            if ttype not in _DTYPES:
                raise ModelLoadError(f"{path}: tensor {t.Name().decode(errors='replace')!r} has type {ttype}, "
                                     "which the numpy backend does not support; use the litert backend.")
            shape = _vec(t.ShapeAsNumpy)
            sig = _vec(t.ShapeSignatureAsNumpy) or list(shape)
            tensor = Tensor(i, t.Name().decode(errors="replace"), shape, sig, np.dtype(_DTYPES[ttype]))
            q = t.Quantization()
            if q is not None and q.ScaleLength() > 0:
                tensor.scale = q.ScaleAsNumpy().astype(np.float32)
                tensor.zero_point = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else \
                    np.zeros(len(tensor.scale), np.int64)
                tensor.axis = q.QuantizedDimension()
            if t.Sparsity() is not None:
                raise ModelLoadError(f"{path}: tensor {tensor.name!r} is stored sparse (DENSIFY); "
                                     "the numpy backend runs dense models only; use the litert backend.")
            buf = buffers[t.Buffer()] if 0 <= t.Buffer() < len(buffers) else None
            if buf is not None and len(buf):
                n = int(np.prod(shape)) if shape else 1
                arr = np.frombuffer(buf.tobytes(), tensor.dtype)
                if arr.size != n:
                    raise ValueError(f"tensor {tensor.name!r}: buffer holds {arr.size} values, shape needs {n}")
                tensor.data = arr.reshape(shape)
            tensors.append(tensor)
        ops = []
        for i in range(sg.OperatorsLength()):
            o = sg.Operators(i)
            if not 0 <= o.OpcodeIndex() < model.OperatorCodesLength():
                raise ValueError(f"operator {i} names opcode {o.OpcodeIndex()}, "
                                 f"the file has {model.OperatorCodesLength()}")
            code = model.OperatorCodes(o.OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            if builtin == tflite.BuiltinOperator.CUSTOM:
                name = "CUSTOM:" + (code.CustomCode() or b"?").decode(errors="replace")
            else:
                name = BUILTIN_OPCODE2NAME.get(builtin, f"BUILTIN_{builtin}")
            ops.append(Op(name, int(code.Version()), _vec(o.InputsAsNumpy), _vec(o.OutputsAsNumpy),
                          _options(o) if not name.startswith("CUSTOM") else {}))
        n = len(tensors)
        ins, outs = _vec(sg.InputsAsNumpy), _vec(sg.OutputsAsNumpy)
        for idx in ins + outs + [j for op in ops for j in op.inputs + op.outputs]:
            if not -1 <= idx < n:
                raise ValueError(f"tensor index {idx} out of range (the graph has {n} tensors)")
        return Graph(tensors, ops, ins, outs)
    except ModelLoadError:
        raise
    except Exception as e:  # the flatbuffer library raises anything from struct.error to IndexError on bad bytes
        raise ModelLoadError(f"{path}: cannot read the TFLite flatbuffer ({type(e).__name__}: {e}); "
                             "the file is corrupt or truncated: re-export it.") from None
