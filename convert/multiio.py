"""Models with several inputs and/or outputs: their sample data, and how it travels through one array.

The convert pipeline (calibration sampling, the held-out split, child processes, check files) moves one array of
samples around. For a model with several inputs each sample is *packed*: every input flattened and concatenated
in the model's input order, ``(N, sum of sizes)``. Only the code that feeds a model unpacks it (:func:`unpack`),
so splitting, sampling and storing stay the same for every model. Outputs are packed the same way for the
bundle's check files.

Sample data for such a model is an ``.npz`` with one array per input, named like the model's inputs
(``x_<name>`` also accepted), and optionally labels ``y`` (or ``y_train``) for the output named by
``--label-output``. ``--eval`` takes the same format with labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgeport_runtime.errors import InputError, UsageError

from ..data.datasets import _labels_to_int
from ..data.run import HOLDOUT, Data, holdout_split
from ..data.split import stratified_split

Spec = Tuple[str, Tuple[int, ...]]


def sizes(shapes: Sequence[Sequence[int]]) -> List[int]:
    """Values per sample of each tensor."""
    return [int(np.prod(s)) for s in shapes]


def pack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """[(N, ...), (N, ...)] -> (N, total) float32, in the given order."""
    n = len(arrays[0])
    return np.concatenate([np.asarray(a, np.float32).reshape(n, -1) for a in arrays], axis=1)


def unpack(x: np.ndarray, shapes: Sequence[Sequence[int]]) -> List[np.ndarray]:
    """The inverse of :func:`pack`: (N, total) -> one float32 array per shape."""
    out, at = [], 0
    for shape, k in zip(shapes, sizes(shapes)):
        out.append(np.ascontiguousarray(x[:, at:at + k]).reshape(len(x), *shape).astype(np.float32))
        at += k
    if at != x.shape[1]:
        raise InputError(f"packed samples have {x.shape[1]} values, the model's inputs take {at}.")
    return out


def _arrays(path: Path, specs: List[Spec], what: str) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
    if path.suffix.lower() != ".npz" or not path.is_file():
        names = ", ".join(n for n, _ in specs)
        raise InputError(f"{what} {path}: a model with several inputs ({names}) takes an .npz with one array per "
                         "input, named like the inputs (optional labels y).")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{what} {path}: cannot read it as .npz ({type(e).__name__}).") from None
    xs = []
    for name, shape in specs:
        a = files.get(name, files.get(f"x_{name}"))
        if a is None:
            raise InputError(f"{what} {path}: no array for input {name!r} (found {sorted(files)}); name one array "
                             f"per model input: {', '.join(n for n, _ in specs)}.")
        if a.dtype.kind not in "fiub" or tuple(a.shape[1:]) != tuple(shape):
            raise InputError(f"{what} {path}: input {name!r} must be numeric with samples of shape {tuple(shape)}, "
                             f"got {a.dtype} {tuple(a.shape[1:])}.")
        xs.append(a.astype(np.float32))
    if len({len(a) for a in xs}) != 1:
        raise InputError(f"{what} {path}: the inputs have different sample counts {[len(a) for a in xs]}.")
    y = next((files[k] for k in ("y", "y_train", "y_test") if k in files), None)
    if y is not None:
        y, _ = _labels_to_int(y, f"{what} {path} labels")
        if len(y) != len(xs[0]):
            raise InputError(f"{what} {path}: {len(xs[0])} samples but {len(y)} labels.")
    return xs, y


def load_multi_data(data: Optional[str], specs: List[Spec], seed: int, eval_path: Optional[str],
                    task: str = "classification") -> Data:
    """Packed splits for a several-input model: calibration from --data, held-out from --eval or held back."""
    if data is None:
        raise UsageError("a model with several inputs needs --data: an .npz with one array per input.")
    xs, y = _arrays(Path(data), specs, "--data")
    x = pack(xs)
    if not np.all(np.isfinite(x)):
        raise InputError(f"--data {data}: samples contain NaN or Inf; clean or impute the data first.")
    if y is not None and len(np.unique(y)) < 2:
        y = None  # one class: nothing to measure accuracy on; calibration needs no labels
    labels: List[str] = []
    if eval_path is not None:
        exs, ey = _arrays(Path(eval_path), specs, "--eval")
        if ey is None:
            raise InputError(f"--eval {eval_path}: no labels (y); --eval is the labelled set accuracy is measured on.")
        xtr, ytr, xte, yte = x, y, pack(exs), ey
        split = f"--eval {eval_path}"
    elif y is None:
        xtr, xte = holdout_split(x, HOLDOUT, seed)
        ytr = yte = None
        split = f"{HOLDOUT:.0%} held back at random, seed {seed}; no labels"
    else:
        xtr, xte, ytr, yte = stratified_split(x, y, HOLDOUT, seed)
        split = f"{HOLDOUT:.0%} held out, seed {seed}"
    if yte is not None:
        k = int(max(yte.max(), ytr.max() if ytr is not None else 0)) + 1
        labels = [str(i) for i in range(k)]
    pre = {"input_scale": 1.0, "input_offset": 0.0, "inputs": [n for n, _ in specs]}
    return Data(xtr, ytr, None, None, xte, yte, task, labels, pre, f"dataset {data} ({split})",
                eval_source=eval_path)


def predict_packed(model, x: np.ndarray) -> np.ndarray:
    """Run an edgeport-runtime model on packed samples; outputs packed (single input/output: as is)."""
    if len(model.inputs) > 1:
        x = unpack(x, [s.shape[1:] for s in model.inputs])
    out = model.predict(x)
    return pack(out) if isinstance(out, list) else out


def pack_outputs(out) -> np.ndarray:
    """A source model's outputs (one array or a list) as one array for the check files."""
    return pack(out) if isinstance(out, list) else out
