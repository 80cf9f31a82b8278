"""Models with several inputs or outputs: ``predict`` takes a list or a dict keyed by input name.

Artifacts written by `edgeport convert` list their tensors in the Keras model's order and under its names
(input layer names; output layer names), so a list is matched by position and a dict by name. Names as
interpreters report them for other files (``serving_default_image:0``) also match their plain form (``image``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

from .errors import InputError
from .manifest import TensorSpec

_DECOR = re.compile(r"^(serving_default_)?(?P<name>.*?)(:\d+)?$")


def plain_name(name: str) -> str:
    """``serving_default_image:0`` -> ``image``: the name a user wrote in the Keras model."""
    m = _DECOR.match(name)
    return m.group("name") if m else name


def arrange_inputs(x: Union[Mapping[str, Any], Sequence[Any], Any], specs: List[TensorSpec]) -> List[Any]:
    """A dict keyed by input name, a list in input order, or one array -> a list in input order.

    Raises:
        InputError: a dict with missing or unknown names (the message lists the model's inputs).
    """
    if isinstance(x, Mapping):
        lookup: Dict[str, int] = {}
        for i, s in enumerate(specs):
            lookup.setdefault(s.name, i)
            lookup.setdefault(plain_name(s.name), i)
        names = ", ".join(plain_name(s.name) for s in specs)
        unknown = [k for k in x if k not in lookup]
        if unknown:
            raise InputError(f"unknown input name(s) {unknown}; the model's inputs are: {names}.")
        given = {lookup[k]: v for k, v in x.items()}
        missing = [plain_name(s.name) for i, s in enumerate(specs) if i not in given]
        if missing or len(given) != len(x):
            raise InputError(f"inputs {missing or '(one given twice)'} missing; pass one array per input: {names}.")
        return [given[i] for i in range(len(specs))]
    if isinstance(x, list):  # a list is one array per input, as it always was
        return list(x)
    return [x]


def wrap_outputs(out: List[np.ndarray], specs: List[TensorSpec], as_dict: bool):
    """One output -> the array (unchanged single-output behaviour); several -> a list, or a dict by name."""
    if as_dict:
        return {plain_name(s.name): o for s, o in zip(specs, out)}
    return out[0] if len(out) == 1 else out
