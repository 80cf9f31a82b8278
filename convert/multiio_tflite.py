"""Artifacts of several-input/output models list their tensors in the Keras model's order, under its names.

The TFLite converter orders a SavedModel signature's inputs alphabetically and names tensors
``serving_default_<name>:0`` / ``StatefulPartitionedCall:1``, with outputs in no promised order. A user passing a
list to ``Model.predict`` (or reading the outputs as a list) expects the Keras model's order, so the flatbuffer's
subgraph inputs/outputs are reordered by the signature map (name -> tensor) and the I/O tensors renamed to the
Keras names. The signature itself stays as the converter wrote it. ONNX graphs get their outputs renamed.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional

import numpy as np

from .exporters import ConversionError

_OUTPUT_N = re.compile(r"^output_(\d+)$")


def _output_keys(out_map: Dict[str, int], names: List[str]) -> Optional[List[str]]:
    """Signature output keys in the Keras output order: by name, or by Keras export's ``output_N`` index."""
    if set(out_map) == set(names):
        return list(names)
    idx = {k: int(m.group(1)) for k in out_map for m in [_OUTPUT_N.match(k)] if m}
    if len(idx) == len(out_map) == len(names) and sorted(idx.values()) == list(range(len(names))):
        return sorted(idx, key=idx.get)
    return None


def keras_io_order(data: bytes, src) -> bytes:
    """``data`` (a .tflite) with subgraph inputs/outputs in ``src``'s Keras order, named like the Keras tensors."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    sg = model.subgraphs[0]
    in_names = [n for n, _ in src.inputs]
    out_names = [n for n, _ in src.outputs]
    sigs = model.signatureDefs or []
    if len(sigs) != 1:
        raise ConversionError(f"the converted model has {len(sigs)} signatures; expected one to map its inputs "
                              "and outputs to the Keras model's.")
    in_map = {t.name.decode(): int(t.tensorIndex) for t in sigs[0].inputs}
    out_map = {t.name.decode(): int(t.tensorIndex) for t in sigs[0].outputs}
    keys = _output_keys(out_map, out_names)
    if set(in_map) != set(in_names) or keys is None:
        raise ConversionError(f"cannot map the converted model's signature (inputs {sorted(in_map)}, outputs "
                              f"{sorted(out_map)}) to the Keras model's inputs {in_names} and outputs {out_names}.")
    sg.inputs = np.asarray([in_map[n] for n in in_names], np.int32)
    sg.outputs = np.asarray([out_map[k] for k in keys], np.int32)
    for i, name in zip(sg.inputs, in_names):
        sg.tensors[int(i)].name = name.encode()
    for i, name in zip(sg.outputs, out_names):
        sg.tensors[int(i)].name = name.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def onnx_output_names(proto, names: List[str]) -> None:
    """Rename an ONNX graph's outputs (in order) to ``names``, rewriting every node that uses them."""
    g = proto.graph
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for out, new in zip(g.output, names):
        old = out.name
        if old == new or new in taken:
            continue  # a clash with an internal tensor: keep the converter's name (still in Keras order)
        for node in g.node:
            for i, o in enumerate(node.output):
                if o == old:
                    node.output[i] = new
            for i, o in enumerate(node.input):
                if o == old:
                    node.input[i] = new
        out.name = new
