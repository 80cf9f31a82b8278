"""ONNX sessions through onnxruntime (CPU execution provider)."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import List

import numpy as np

from ..errors import ModelLoadError
from ..manifest import TensorSpec

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64"}


def _spec(a) -> TensorSpec:
    shape = [d if isinstance(d, int) else None for d in a.shape]
    return TensorSpec(name=a.name, shape=shape, dtype=_DTYPES.get(a.type, a.type))


class OnnxSession:
    """One onnxruntime InferenceSession."""

    def __init__(self, sess):
        self._s = sess
        self.backend = "onnxruntime"
        self.inputs = [_spec(a) for a in sess.get_inputs()]
        self.outputs = [_spec(a) for a in sess.get_outputs()]
        self.dynamic_batch = all(s.shape and s.shape[0] is None for s in self.inputs)
        self._names = [s.name for s in self.outputs]

    def run(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        """Run one batch; the model's fixed batch size is honoured by running sample by sample."""
        if not self.dynamic_batch and len(arrays[0]) != 1:
            parts = [self.run([a[i:i + 1] for a in arrays]) for i in range(len(arrays[0]))]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(self.outputs))]
        return self._s.run(self._names, {s.name: a for s, a in zip(self.inputs, arrays)})


def open_session(backend, path: str, num_threads: int) -> OnnxSession:
    """Open a .onnx file; raise ModelLoadError on a corrupt or truncated file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(num_threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        # onnxruntime prints multi-line "EP Error" banners on stdout (breaking `--json`) that repeat the error
        # raised below: keep them off stdout, and out of sight unless EDGEPORT_VERBOSE is set
        with stdout_elsewhere():
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelLoadError(f"{path}: onnxruntime cannot load it ({msg}); "
                             "the file is corrupt, truncated or not an ONNX model.") from None
    return OnnxSession(sess)


@contextlib.contextmanager
def stdout_elsewhere():
    """Point fd 1 at stderr (EDGEPORT_VERBOSE set) or /dev/null for the duration: nothing a library prints,
    from Python or C++, can corrupt machine-read output on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    target = os.dup(2) if os.environ.get("EDGEPORT_VERBOSE") else os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(target, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(target)
