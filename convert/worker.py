"""Child-process side of conversion: each recipe runs in a fresh process.

The TFLite converter leaks ~22 MB per convert() call (tensorflow#122598) and importing tfmot flips
TF_USE_LEGACY_KERAS; a process per recipe bounds both, and the parent never imports TensorFlow at all.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np


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


def _setup(spec: Dict[str, Any]):
    from .. import tfenv

    tfenv.set_verbose(spec.get("verbose", False))
    tfenv.import_tf()
    tfenv.configure_cpu(threads=spec.get("threads"))
    from .source import load_source

    return load_source(spec["model"], unsafe=spec.get("unsafe", False))


def probe(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Load the source model (failing fast on a bad file) and compute its outputs on the check inputs."""
    src = _setup(spec)
    out: Dict[str, Any] = {"kind": src.kind, "input_shape": list(src.input_shape),
                           "output_shape": list(src.output_shape)}
    if spec.get("check_inputs") is not None:
        x = np.load(spec["check_inputs"])
        if tuple(x.shape[1:]) == tuple(src.input_shape):  # else the parent reports the mismatch
            out["check_outputs"] = src.predict(x)
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
