"""Reading inputs for the device CLI: .npy arrays, images and CSV rows, preprocessed as the manifest says."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any, List, Mapping, Union

import numpy as np

from .errors import InputError
from .sections import Preprocessing

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".tif", ".tiff"}


PreLike = Union[Preprocessing, Mapping[str, Any]]


def _typed(pre: PreLike) -> Preprocessing:
    """The manifest's Preprocessing as is; a plain dict (e.g. a train.json record) is type-checked into one."""
    return pre if isinstance(pre, Preprocessing) else Preprocessing.from_dict(dict(pre), "preprocessing")


def _scale(raw: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """model input = raw * input_scale + input_offset (the manifest's preprocessing)."""
    return raw.astype(np.float32) * np.float32(pre.scale) + np.float32(pre.offset)


def _standardize(x: np.ndarray, pre: Preprocessing, where: Path) -> np.ndarray:
    """(x - feature_mean) / feature_std per feature, when the manifest records them (tabular training data).

    The same float32 operations on the same recorded numbers as training, so a device sees exactly the
    inputs the model was trained and checked on.
    """
    if pre.feature_mean is None and pre.feature_std is None:
        return x
    if pre.feature_mean is None or pre.feature_std is None:  # (their types were checked when the bundle loaded)
        raise InputError(f"{where}: the bundle's preprocessing has an unusable feature_mean/feature_std; "
                         "expected two lists of numbers, one per feature. Re-create the bundle.")
    mean = np.asarray(pre.feature_mean, np.float32).reshape(-1)
    std = np.asarray(pre.feature_std, np.float32).reshape(-1)
    n = int(np.prod(x.shape[1:]))
    if (mean.size != n or std.size != n or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std))
            or not np.all(std > 0)):
        raise InputError(f"{where}: the bundle's preprocessing has {mean.size} feature means and {std.size} "
                         f"stds (std must be > 0) for a model taking {n} values per sample. Re-create the bundle.")
    flat = x.reshape(len(x), -1)
    return ((flat - mean) / std).reshape(x.shape).astype(np.float32)


def read_image(path: Path, input_shape: List, pre: PreLike) -> np.ndarray:
    """One image -> a batch of 1 shaped like the model input (resized, color-converted, scaled)."""
    pre = _typed(pre)
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading images needs Pillow: `pip install pillow` (or pass a .npy array).") from None
    if len(input_shape) != 4:
        raise InputError(f"{path}: the model input has shape {input_shape}, not an image (N, H, W, C).")
    h, w, c = input_shape[1:]
    if c not in (1, 3):
        raise InputError(f"{path}: the model takes {c} channels per pixel; images give 1 (grayscale) or 3 (RGB). "
                         "Pass a .npy array instead.")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a device should refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                raw = np.asarray(im, np.float32).reshape(1, h, w, c)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: the image has more than {Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's "
                         "decompression-bomb limit); refusing to decode it. Resize it first.") from None
    except Exception as e:  # OSError, SyntaxError, ValueError, struct.error...: Pillow's decoders raise many
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputError(f"{path}: cannot read the image ({msg}).") from None
    raw_range = pre.raw_range
    if raw_range and raw_range[1] != 255:  # e.g. digits were 0..16: map 8-bit pixels onto that range
        raw = raw * (raw_range[1] - raw_range[0]) / 255.0 + raw_range[0]
    return _scale(raw, pre)


def read_csv(path: Path, input_shape: List, pre: PreLike) -> np.ndarray:
    """Rows of raw numbers (an optional header row is skipped) -> a batch shaped like the model input.

    Applies the manifest's preprocessing: ``raw * input_scale + input_offset``, then, if the training data was
    standardized, ``(value - feature_mean) / feature_std`` per feature.
    """
    pre = _typed(pre)
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it as CSV ({e}).") from None
    if rows and not _numeric(rows[0]):
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path}: no data rows.")
    try:
        data = np.asarray([[float(v) for v in r] for r in rows], np.float32)
    except ValueError as e:
        raise InputError(f"{path}: every value must be a number ({e}).") from None
    per_sample = int(np.prod([d for d in input_shape[1:]]))
    if data.shape[1] != per_sample:
        raise InputError(f"{path}: rows have {data.shape[1]} values; the model takes {per_sample} per sample "
                         f"(input shape {input_shape}).")
    return _standardize(_scale(data.reshape(len(data), *input_shape[1:]), pre), pre, path)


def _numeric(row: List[str]) -> bool:
    try:
        [float(v) for v in row]
        return True
    except ValueError:
        return False


def read_input(path: str, input_shape: List, pre: PreLike) -> np.ndarray:
    """Dispatch on the file suffix: .npy (model-ready floats), .csv (raw features), images (raw pixels)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--input {path}: no such file.")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            x = np.load(p, allow_pickle=False)
        except Exception as e:  # OSError, ValueError, EOFError, UnicodeDecodeError from a corrupt header
            msg = " ".join(str(e).split())[:200] or type(e).__name__
            raise InputError(f"{p}: cannot read it as .npy ({msg}).") from None
        if not isinstance(x, np.ndarray):
            raise InputError(f"{p}: expected one array in a .npy file, got {type(x).__name__}.")
        if x.ndim == len(input_shape) - 1:  # one sample without a batch dimension
            x = x[None]
        return x
    if suffix == ".csv":
        return read_csv(p, input_shape, pre)
    if suffix in IMAGE_SUFFIXES:
        return read_image(p, input_shape, pre)
    raise InputError(f"--input {path}: unsupported type {suffix!r}; expected .npy, .csv or an image "
                     f"({', '.join(sorted(IMAGE_SUFFIXES))}).")
