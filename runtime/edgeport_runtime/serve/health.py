"""The service's health check: the model is loaded, its file on disk is still the one loaded, and the bundle's
check inputs give the outputs the bundle recorded for this artifact (within the smoke-parity tolerances)."""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import EdgeportError
from ..manifest import contained_path, load_npy
from ..smoke import FLOAT_ATOL, INT8_STEPS

_HASH_BLOCK = 1 << 20


def _stat_key(path: str) -> Tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


class HealthCheck:
    """Runs the check for one loaded model. ``run()`` returns (ok, details); it never raises.

    The check inputs and recorded outputs are read once, at start (paths contained in the bundle). The
    artifact's file is re-hashed only when its inode, size or mtime changed since the last check, so a healthy
    service answers /health with one stat() and one small inference.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.x: Optional[np.ndarray] = None
        self.want: Optional[np.ndarray] = None
        self.problem: Optional[str] = None  # a reason the check can never pass (found at start)
        self._lock = threading.Lock()
        self._stat: Optional[Tuple[int, int, int]] = None
        art, man = model.artifact, model.manifest
        if art is None or man is None:  # a bare .tflite/.onnx: nothing recorded to compare with
            return
        try:
            if not man.check.get("inputs") or not art.check_outputs:
                self.problem = (f"the bundle records no check inputs/outputs for artifact {art.name!r}; "
                                "re-run `edgeport convert` to get a bundle the service can check")
                return
            self.x = load_npy(contained_path(model.directory, man.check["inputs"], "manifest check.inputs"),
                              "the check inputs").astype(np.float32)
            self.want = load_npy(contained_path(model.directory, art.check_outputs,
                                                f"artifact {art.name!r} check_outputs"), "the check outputs")
            self._stat = _stat_key(model.path)
        except (EdgeportError, OSError, ValueError) as e:
            self.problem = " ".join(str(e).split())

    def _file_unchanged(self) -> Optional[str]:
        """None when the artifact file still has the sha256 it was loaded with, else why not."""
        art = self.model.artifact
        try:
            key = _stat_key(self.model.path)
            if key == self._stat:
                return None
            digest = _sha256(self.model.path)
        except OSError as e:
            return f"the artifact file {self.model.path} is gone or unreadable ({e.strerror or e})"
        if digest != art.sha256:
            return (f"the artifact file {self.model.path} changed on disk since the service loaded it (sha256 "
                    f"{digest[:12]}..., loaded {art.sha256[:12]}...); restart the service to run the new file")
        self._stat = key  # same bytes (touched or copied over): nothing to do
        return None

    def run(self) -> Tuple[bool, Dict[str, Any]]:
        """(passed, details for the /health body)."""
        details: Dict[str, Any] = {}
        if self.problem:
            return False, {"reason": self.problem}
        if self.x is None:
            return True, {"check": "none (a bare model file has no recorded outputs)"}
        with self._lock:
            changed = self._file_unchanged()
        if changed:
            return False, {"reason": changed}
        try:
            y = self.model.predict(self.x)
        except EdgeportError as e:
            return False, {"reason": f"the model failed on its check inputs: {' '.join(str(e).split())}"}
        if isinstance(y, list) or y.shape != self.want.shape:
            got = [list(o.shape) for o in y] if isinstance(y, list) else list(y.shape)
            return False, {"reason": f"the check outputs recorded in the bundle have shape {list(self.want.shape)}, "
                                     f"the model gives {got}; the bundle does not belong to this model"}
        diff = float(np.abs(y.astype(np.float64) - self.want).max())
        out = self.model.outputs[0]
        backend = self.model.info["backend"]
        if out.quantized:
            tol = INT8_STEPS.get(backend, 0) * out.scale + 1e-6 * out.scale
            details["tolerance"] = f"{INT8_STEPS.get(backend, 0)} output steps"
        else:
            tol = FLOAT_ATOL
            details["tolerance"] = FLOAT_ATOL
        details.update(samples=int(len(self.x)), max_abs_diff=diff)
        if not diff <= tol:  # NaN fails too
            details["reason"] = (f"the check inputs give outputs {diff:.3g} away from the ones the bundle recorded "
                                 f"(tolerance {details['tolerance']}): the model file is not the one converted")
            return False, details
        return True, details
