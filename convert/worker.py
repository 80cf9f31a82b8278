"""Child-process side of conversion: each recipe runs in a fresh process.

The TFLite converter leaks ~22 MB per convert() call (tensorflow#122598) and importing tfmot flips
TF_USE_LEGACY_KERAS; a process per recipe bounds both, and the parent never imports TensorFlow at all.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import logging
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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


def _setup(spec: Dict[str, Any]):
    from ..core import tfenv

    quiet_ort_axis_warning()

    tfenv.set_verbose(spec.get("verbose", False))
    tfenv.import_tf()
    tfenv.configure_cpu(threads=spec.get("threads"))
    from .source import load_source

    return load_source(spec["model"], unsafe=spec.get("unsafe", False))


def probe(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Load the source model (failing fast on a bad file) and compute its outputs on the check inputs."""
    src = _setup(spec)
    from .multiio import pack_outputs

    out: Dict[str, Any] = {"kind": src.kind, "input_shape": list(src.sample_shape),
                           "output_shape": list(src.output_shape),
                           "inputs": [[n, list(s)] for n, s in src.inputs or []],
                           "outputs": [[n, list(s)] for n, s in src.outputs or []]}
    if spec.get("check_inputs") is not None:
        x = np.load(spec["check_inputs"])
        if tuple(x.shape[1:]) == tuple(src.sample_shape):  # else the parent reports the mismatch
            out["check_outputs"] = pack_outputs(src.predict(x))
    return out


def run_recipe(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Export one recipe to ``spec['out_path']``; return the exporter's extra metadata."""
    from .recipes import RECIPES, Recipe

    src = _setup(spec)
    data = np.load(spec["data"])
    recipe = Recipe(spec["recipe"])
    rs = RECIPES[recipe]
    job = Job(src, data["calibration"],
              data["x_train"] if rs.bridge else None, data["y_train"] if rs.bridge else None,
              data["x_val"] if rs.bridge and "x_val" in data else None,
              data["y_val"] if rs.bridge and "y_val" in data else None, spec["task"], spec["seed"])
    exporters = importlib.import_module("edgeport.convert.exporters")
    return getattr(exporters, rs.exporter)(job, rs, spec["options"], Path(spec["out_path"])) or {}


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
