"""A model's input names and shapes read from its saved config, without TensorFlow or running anything.

`edgeport convert` needs the input shape before it loads any data (image folders default to the model's image
size and channels; a CSV with exactly as many columns as the model takes inputs has no label column), but the
parent process never imports TensorFlow. ``.keras`` archives and ``.h5`` files carry the architecture as JSON;
SavedModels do not (None: the options or loader defaults apply).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

from .source import _config_objects

Shape = Tuple[int, ...]


def _config(path: Path) -> Optional[dict]:
    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        if path.suffix.lower() in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            return None if raw is None else json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # the loader reports a damaged file properly later
    return None


def _layer_shape(c: dict) -> Optional[list]:
    conf = c.get("config") or {}
    return conf.get("batch_shape") or conf.get("batch_input_shape")


def input_specs(path: Path) -> Optional[List[Tuple[str, Shape]]]:
    """[(name, sample shape without batch)] of each model input in the model's order; None when unknown."""
    config = _config(Path(path))
    if not isinstance(config, dict):
        return None
    shapes = {}
    first = None
    for c in _config_objects(config):
        shape = _layer_shape(c) if isinstance(c.get("config"), dict) else None
        if shape and isinstance(shape, list) and "class_name" in c:
            name = str(c["config"].get("name", ""))
            if c["class_name"] == "InputLayer":
                shapes.setdefault(name, shape)
            first = first or (name, shape)
    order = (config.get("config") or {}).get("input_layers")
    if order and isinstance(order, list):
        if order and not isinstance(order[0], list):  # Keras 3 writes a single input as [name, 0, 0]
            order = [order]
        names = [str(o[0]) for o in order if isinstance(o, list) and o]
        if names and all(n in shapes for n in names):
            return [(n, _dims(shapes[n])) for n in names]
    if len(shapes) == 1:
        n, s = next(iter(shapes.items()))
        return [(n, _dims(s))]
    if first is not None and not shapes:  # Sequential with the shape on its first layer
        return [(first[0], _dims(first[1]))]
    return None


def _dims(shape: list) -> Shape:
    return tuple(-1 if d is None else int(d) for d in shape[1:])


def sample_shape(path: Path) -> Optional[Shape]:
    """The single input's sample shape (None when unknown or the model has several inputs)."""
    specs = input_specs(path)
    return specs[0][1] if specs and len(specs) == 1 and -1 not in specs[0][1] else None


def model_outputs(path: Path) -> Optional[List[str]]:
    """Names of the model's outputs when it has several (None: one output, or unknown)."""
    config = _config(Path(path))
    order = ((config or {}).get("config") or {}).get("output_layers")
    if not order or not isinstance(order, list) or not isinstance(order[0], list) or len(order) < 2:
        return None
    return [str(o[0]) for o in order if isinstance(o, list) and o]
