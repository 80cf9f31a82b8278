"""TFLite sessions through ai-edge-litert or tflite-runtime (the same Interpreter API)."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import List

import numpy as np

from ..errors import ModelLoadError
from ..manifest import TensorSpec
from .tflite_verify import verify_tflite


def _spec(d) -> TensorSpec:
    q = d.get("quantization_parameters") or {}
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    sig = d.get("shape_signature", d["shape"])
    shape = [None if (i == 0 and s == -1) else int(s) for i, s in enumerate(sig)]
    quantized = len(scales) == 1 and np.dtype(d["dtype"]).kind in "iu"
    return TensorSpec(name=d["name"], shape=shape, dtype=np.dtype(d["dtype"]).name,
                      scale=float(scales[0]) if quantized else None,
                      zero_point=int(zps[0]) if quantized else None)


class TFLiteSession:
    """One interpreter; resizes the batch dimension when the model allows it, else runs sample by sample."""

    def __init__(self, interpreter, backend_name: str):
        self._it = interpreter
        self.backend = backend_name
        self._in = interpreter.get_input_details()
        self._out = interpreter.get_output_details()
        self.inputs = [_spec(d) for d in self._in]
        self.outputs = [_spec(d) for d in self._out]
        self.dynamic_batch = all(len(d.get("shape_signature", [])) and d["shape_signature"][0] == -1
                                 for d in self._in)
        self._batch = None
        self._in0 = self._in[0]["index"]

    def _resize(self, n: int) -> None:
        if n == self._batch:
            return
        for d in self._in:
            self._it.resize_tensor_input(d["index"], [n, *d["shape_signature"][1:]], strict=False)
        self._it.allocate_tensors()
        self._batch = n
        self._out = self._it.get_output_details()

    def run(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """Run one batch (arrays already in the model's input dtypes); return output arrays (copies)."""
        n = len(arrays[0])
        if n == self._batch and len(arrays) == 1:  # hot path: same batch size as the last call
            self._it.set_tensor(self._in0, arrays[0])
            self._it.invoke()
            return [self._it.get_tensor(d["index"]) for d in self._out]
        if not self.dynamic_batch and n != 1:
            parts = [self.run([a[i:i + 1] for a in arrays]) for i in range(n)]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(self._out))]
        self._resize(n if self.dynamic_batch else 1)
        for d, a in zip(self._in, arrays):
            self._it.set_tensor(d["index"], a)
        self._it.invoke()
        return [self._it.get_tensor(d["index"]) for d in self._out]  # get_tensor returns a copy

    @property
    def interpreter(self):
        """The underlying interpreter (benchmarks compare against a bare invoke)."""
        return self._it


@contextlib.contextmanager
def quiet_stderr():
    """Silence fd 2 (C++ INFO lines) unless EDGEPORT_VERBOSE is set; Python exceptions still carry errors."""
    if os.environ.get("EDGEPORT_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_session(backend, path: str, num_threads: int) -> TFLiteSession:
    """Open a .tflite file; raise ModelLoadError (never crash) on a corrupt or truncated file."""
    mod = importlib.import_module(backend.module)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TFLite flatbuffer (missing the TFL3 identifier); "
                             "the file is corrupt, truncated or not a .tflite model.")
    verify_tflite(data, path)  # the interpreter does not verify offsets: a corrupt file could crash it in C++
    try:
        with quiet_stderr():  # LiteRT prints an INFO line per interpreter ("Created ... XNNPACK delegate")
            # the verified bytes themselves, so the file cannot change between the check and the load
            it = mod.Interpreter(model_content=data, num_threads=int(num_threads))
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: {backend.name} cannot load it ({str(e).strip().splitlines()[0]}).") from None
    return TFLiteSession(it, backend.name)
