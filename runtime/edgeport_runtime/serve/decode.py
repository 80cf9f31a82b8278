"""Request bodies -> validated float32 arrays: JSON arrays, .npy files and images (when Pillow is installed)."""
from __future__ import annotations

import importlib.util
import io
import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..inputs import _scale, _standardize, read_image

NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
NPY_MAGIC = b"\x93NUMPY"


class UnsupportedMedia(InputError):
    """A Content-Type /predict does not take (HTTP 415)."""


class _Upload(io.BytesIO):
    """An in-memory upload that names itself in error messages like a file would."""

    def __str__(self) -> str:
        return "the uploaded image"


def _numeric(value: Any, what: str) -> np.ndarray:
    """A nested JSON list -> an array of real numbers, refusing strings, booleans, nulls and ragged lists."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, ints too large for int64
        raise InputError(f"{what}: not a rectangular array of numbers (rows of different lengths, or nested "
                         "deeper in some places than others).") from None
    if a.dtype.kind not in "iuf":
        kind = {"b": "true/false", "U": "strings", "O": "nulls, objects or mixed types", "S": "bytes"}
        raise InputError(f"{what}: expected numbers, got {kind.get(a.dtype.kind, a.dtype.name)}.")
    if a.size == 0:
        raise InputError(f"{what}: empty array; expected at least one sample.")
    return a


def _fit(a: np.ndarray, spec_shape: List) -> np.ndarray:
    """Add the batch dimension to a single sample; leave anything else to the shape check."""
    if a.ndim == len(spec_shape) - 1:
        a = a[None]
    return a


def from_json(body: bytes, shapes: List[List], pre: Dict[str, Any]) -> Tuple[List[np.ndarray], Dict[str, Any]]:
    """``{"inputs": ARRAY}`` (or a bare ARRAY) -> arrays; ``"raw": true`` applies the bundle's preprocessing.

    For a model with several inputs, ``inputs`` is a list with one array per input. Options other than the
    arrays (``top``, ``raw``) come back in the second element.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise InputError("the JSON body is nested too deeply to parse; send arrays of the model's rank.") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"the body is not valid JSON ({' '.join(str(e).split())[:120]}).") from None
    opts: Dict[str, Any] = {}
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"inputs", "raw", "top"})
        if unknown:
            raise InputError(f"unknown JSON key(s) {', '.join(map(repr, unknown))}; expected \"inputs\" (the array), "
                             "and optionally \"raw\" (true: apply the bundle's preprocessing) and \"top\".")
        if "inputs" not in doc:
            raise InputError('the JSON object has no "inputs"; send {"inputs": [[...], ...]}.')
        opts = {k: doc[k] for k in ("raw", "top") if k in doc}
        doc = doc["inputs"]
    if not isinstance(doc, list):
        raise InputError(f"\"inputs\" must be an array of numbers, got {type(doc).__name__}.")
    raw = opts.get("raw", False)
    if not isinstance(raw, bool):
        raise InputError(f"\"raw\" must be true or false, got {raw!r}.")
    parts = doc if len(shapes) > 1 else [doc]
    if len(parts) != len(shapes):
        raise InputError(f"the model has {len(shapes)} inputs: send \"inputs\" as a list of {len(shapes)} arrays, "
                         f"got {len(parts)}.")
    arrays = []
    for i, (part, shape) in enumerate(zip(parts, shapes)):
        what = "inputs" if len(shapes) == 1 else f"inputs[{i}]"
        a = _numeric(part, what)
        tail = list(shape[1:])
        fixed = None not in tail
        if raw:  # raw feature rows (flat or shaped), exactly what `edgeport-run predict --input x.csv` takes
            if not fixed:
                raise InputError(f"{what}: the model input {['N'] + tail} has free dimensions; raw values cannot be "
                                 "shaped for it. Send model-ready arrays (\"raw\": false).")
            per = int(np.prod(tail))
            if a.size % per:
                raise InputError(f"{what}: {a.size} raw values; the model takes {per} per sample (input shape "
                                 f"{['N'] + tail}).")
            a = _standardize(_scale(a.reshape(-1, *tail), pre), pre, "raw inputs")
        elif fixed and a.ndim == 1 and len(shape) > 2 and a.size == int(np.prod(tail)):
            a = a.reshape(tail)  # one sample's values in a flat list (e.g. pasted into the page)
        arrays.append(_fit(a, shape))
    return arrays, opts


def from_npy(body: bytes, shapes: List[List]) -> List[np.ndarray]:
    """A .npy file (model-ready floats) -> one array."""
    if len(shapes) != 1:
        raise InputError(f"the model has {len(shapes)} inputs; a .npy body holds one array. Send JSON with one "
                         "array per input.")
    if not body.startswith(NPY_MAGIC):
        raise InputError("the body is not a .npy file (no \\x93NUMPY header); send the bytes np.save writes.")
    try:
        a = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as e:  # ValueError, EOFError, OSError, UnicodeDecodeError from a corrupt header
        raise InputError(f"cannot read the body as .npy ({' '.join(str(e).split())[:150] or type(e).__name__}).") \
            from None
    if a.dtype.kind not in "iuf":
        raise InputError(f"the .npy array has dtype {a.dtype}; expected real numbers (float32).")
    if a.size == 0:
        raise InputError("the .npy array is empty; expected at least one sample.")
    return [_fit(a, shapes[0])]


def from_image(body: bytes, shapes: List[List], pre: Dict[str, Any]) -> List[np.ndarray]:
    """An image file (PNG, JPEG, ...) -> one sample, resized and scaled as the bundle's preprocessing says."""
    if len(shapes) != 1:
        raise InputError(f"the model has {len(shapes)} inputs; an image fills one. Send JSON instead.")
    if importlib.util.find_spec("PIL") is None:  # the [image] extra
        raise UnsupportedMedia("image uploads need Pillow on the device: pip install 'edgeport-runtime[image]' "
                               "(or send JSON / .npy).")
    shape = [1 if d is None else d for d in shapes[0]]
    return [read_image(_Upload(body), shape, pre)]


def decode(content_type: Optional[str], body: bytes, shapes: List[List], pre: Dict[str, Any]
           ) -> Tuple[List[np.ndarray], Dict[str, Any]]:
    """Dispatch on the Content-Type; return the arrays and the JSON options.

    Raises:
        UnsupportedMedia: a Content-Type that is none of JSON, .npy or image/*.
        InputError: a body that does not parse or holds no usable numbers.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    if not body:
        raise InputError("empty body; send JSON ({\"inputs\": [...]}), a .npy file or an image.")
    if ctype in ("application/json", "text/json") or (not ctype and body[:1] in (b"[", b"{")):
        return from_json(body, shapes, pre)
    if ctype in NPY_TYPES or (not ctype and body.startswith(NPY_MAGIC)):
        return from_npy(body, shapes), {}
    if ctype.startswith("image/"):
        return from_image(body, shapes, pre), {}
    if ctype.startswith("multipart/"):
        raise UnsupportedMedia("multipart form uploads are not taken; send the file itself as the body, e.g. "
                               "curl --data-binary @digit.png -H 'Content-Type: image/png' URL/predict.")
    raise UnsupportedMedia(f"Content-Type {ctype or '(none)'!r} is not taken; send application/json, "
                           "application/x-npy or image/* (PNG, JPEG, ...).")
