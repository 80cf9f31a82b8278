"""`edgeport inspect`: what is inside a .tflite or .onnx file (ops, dtypes, parameters, size)."""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path
from typing import Any, Dict

import numpy as np

from edgeport_runtime import load
from edgeport_runtime.errors import ModelLoadError


def _tflite(path: Path) -> Dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=False)
        op_details = it._get_ops_details()
        ops = Counter(op["op_name"] for op in op_details)
        tensors = it.get_tensor_details()
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: not a loadable TFLite model ({e}).") from None
    # Constant tensors (weights) are those the interpreter never writes: no producing op, not an input.
    produced = {t for op in op_details for t in op["outputs"]}
    inputs = {d["index"] for d in it.get_input_details()}
    weights = [t for t in tensors if t["index"] not in produced and t["index"] not in inputs and t["shape"].size]
    params = int(sum(int(np.prod(t["shape"])) for t in weights))
    m = load(path, num_threads=1)
    return {"ops": dict(ops), "params": params,
            "weight_dtypes": dict(Counter(np.dtype(t["dtype"]).name for t in weights)),
            "inputs": [vars(s) for s in m.inputs], "outputs": [vars(s) for s in m.outputs]}


def _onnx(path: Path) -> Dict[str, Any]:
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({str(e)[:200]}).") from None
    inits = model.graph.initializer
    m = load(path, num_threads=1)
    return {"ops": dict(Counter(n.op_type for n in model.graph.node)),
            "params": int(sum(int(np.prod(t.dims)) for t in inits)),
            "weight_dtypes": dict(Counter(onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in inits)),
            "inputs": [vars(s) for s in m.inputs], "outputs": [vars(s) for s in m.outputs]}


_INSPECTORS = {".tflite": ("tflite", _tflite), ".onnx": ("onnx", _onnx)}


def inspect_file(path: str) -> Dict[str, Any]:
    """Describe a model file; raise ModelLoadError for missing, unsupported or corrupt files."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such file.")
    if p.suffix.lower() not in _INSPECTORS:
        raise ModelLoadError(f"{p}: expected a .tflite or .onnx file, got {p.suffix!r}.")
    fmt, fn = _INSPECTORS[p.suffix.lower()]
    data = p.read_bytes()
    info = {"path": str(p), "format": fmt, "bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9, mtime=0))}
    info.update(fn(p))
    return info
