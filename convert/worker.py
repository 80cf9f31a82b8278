"""Child-process side of conversion: each recipe runs in a fresh process.

The TFLite converter leaks ~22 MB per convert() call (tensorflow#122598) and importing tfmot flips
TF_USE_LEGACY_KERAS; a process per recipe bounds both, and the parent never imports TensorFlow at all.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..core import tfenv
from .exporters import EXPORTERS
from .recipes import RecipeJob
from .source import load_source

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class ChildSetup:
    """What every child process needs to load the source model (picklable; built once by the pipeline)."""

    model: str  # absolute path of the source model
    unsafe: bool = False  # let the model file run code (--unsafe-load)
    verbose: bool = False
    threads: Optional[int] = None  # TensorFlow intra-op threads


@dataclass
class Job:
    """What an exporter needs, assembled inside the child from picklable paths."""

    source: Any
    calibration: np.ndarray
    train_x: Optional[np.ndarray]
    train_y: Optional[np.ndarray]
    val_x: Optional[np.ndarray]
    val_y: Optional[np.ndarray]
    task: str
    seed: int


class _OrtAxisFilter(logging.Filter):
    """Drop onnxruntime's ``Axis N is out-of-range for weight ...`` warning (logged on the root logger).

    quantize_static(per_channel=True) asks for per-channel scales on every weight of a supported op; for a
    1-D weight (e.g. the folded BatchNorm scale of a tf_keras model, used by Mul) the channel axis does not
    exist, and onnxruntime then quantizes that weight per-tensor, which is the right result. The warning is
    noise printed as ``WARNING:root:...`` in the middle of edgeport's output; only that message is dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and _ORT_AXIS.match(str(record.msg)))


_ORT_AXIS = re.compile(r"^Axis -?\d+ is out-of-range for weight ")


def quiet_ort_axis_warning() -> None:
    """Install :class:`_OrtAxisFilter` on the root logger once (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(f, _OrtAxisFilter) for f in root.filters):
        root.addFilter(_OrtAxisFilter())


def _setup(setup: ChildSetup):
    quiet_ort_axis_warning()

    tfenv.set_verbose(setup.verbose)
    tfenv.import_tf()
    tfenv.configure_cpu(threads=setup.threads)
    return load_source(setup.model, unsafe=setup.unsafe)


def probe(setup: ChildSetup, check_inputs: Optional[str] = None) -> Dict[str, Any]:
    """Load the source model (failing fast on a bad file) and compute its outputs on the check inputs."""
    src = _setup(setup)
    out: Dict[str, Any] = {"kind": src.kind, "input_shape": list(src.input_shape),
                           "output_shape": list(src.output_shape)}
    if check_inputs is not None:
        x = np.load(check_inputs)
        if tuple(x.shape[1:]) == tuple(src.input_shape):  # else the parent reports the mismatch
            out["check_outputs"] = src.predict(x)
    return out


def run_recipe(setup: ChildSetup, job: RecipeJob, data: str, task: str, seed: int, out_path: str
               ) -> Dict[str, Any]:
    """Export ``job``'s recipe to ``out_path``; return the exporter's extra metadata.

    ``data`` is the .npz the parent wrote (calibration samples, and the training split for recipes that fine-tune).
    """
    src = _setup(setup)
    arrays = np.load(data)
    rs = job.spec
    inputs = Job(src, arrays["calibration"],
                 arrays["x_train"] if rs.bridge else None, arrays["y_train"] if rs.bridge else None,
                 arrays["x_val"] if rs.bridge and "x_val" in arrays else None,
                 arrays["y_val"] if rs.bridge and "y_val" in arrays else None, task, seed)
    return EXPORTERS[job.recipe](inputs, rs, dict(job.options), Path(out_path)) or {}


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: have the kernel SIGKILL this child when the parent dies, however it dies.

    Without it a SIGKILLed ``edgeport convert`` leaves recipe processes writing on. SIGINT is ignored here: a
    Ctrl-C reaches the whole process group and the parent decides (it kills the pool and cleans up).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's explicit kill on interrupt still applies
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
