"""Sample data for converting a model trained elsewhere: labelled or not, raw files preprocessed as told.

Calibration needs inputs only, so `edgeport convert --data` accepts, besides the labelled datasets of
:mod:`edgeport.data.datasets`: a ``.npy`` array (x only), a ``.npz`` holding only ``x_train`` or ``x``, an image
folder with or without class subfolders, and a CSV without a label column. How raw values become model inputs
(``raw * input_scale + input_offset``, image size, channels, layout) comes from :class:`InputOptions` (command
line or TOML) and is recorded in the manifest's preprocessing exactly like a training run's.
"""
from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeport_runtime.errors import InputError, UsageError

from . import datasets as ds_mod
from .datasets import DATASETS, IMAGE_SUFFIXES, Dataset

LAYOUTS = ("NHWC", "NCHW")
LABEL_MODES = ("auto", "none")


@dataclass
class InputOptions:
    """How raw sample files become model inputs (None: the loader's default or the model's own shape)."""

    input_scale: Optional[float] = None
    input_offset: Optional[float] = None
    image_size: Optional[Tuple[int, int]] = None  # (height, width)
    channels: Optional[int] = None
    layout: Optional[str] = None  # NHWC | NCHW (images only)
    labels: str = "auto"  # auto: use labels when the data has them; none: ignore any labels
    label_column: Optional[str] = None  # the CSV's label column (default: the last, when it holds classes)

    def check(self) -> "InputOptions":
        """Raise UsageError for values no loader could use; return self."""
        if self.layout is not None and self.layout not in LAYOUTS:
            raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}.")
        if self.channels is not None and self.channels not in (1, 3):
            raise UsageError(f"--channels must be 1 (grayscale) or 3 (RGB), got {self.channels}.")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise UsageError(f"--image-size must be HEIGHTxWIDTH with both >= 1, got {self.image_size}.")
        if self.labels not in LABEL_MODES:
            raise UsageError(f"labels must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}.")
        for name in ("input_scale", "input_offset"):
            v = getattr(self, name)
            if v is not None and not np.isfinite(v):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {v}.")
        return self

    def record(self) -> Dict[str, Any]:
        """JSON-ready dict of the options that were given (for the manifest, to re-load the same way)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v is not None and not (k == "labels" and v == "auto")}

    @classmethod
    def from_record(cls, rec: Optional[Dict[str, Any]]) -> "InputOptions":
        """The inverse of :meth:`record`."""
        rec = dict(rec or {})
        if rec.get("image_size") is not None:
            rec["image_size"] = tuple(rec["image_size"])
        return cls(**{k: v for k, v in rec.items() if k in cls.__dataclass_fields__})


def parse_image_size(text: str) -> Tuple[int, int]:
    """'96x96' or '96' -> (96, 96); UsageError otherwise."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise UsageError(f"--image-size: expected HEIGHTxWIDTH such as 96x96, got {text!r}.")
    return dims[0], dims[1]


def _image_shape(opts: InputOptions, model_shape: Optional[Sequence[int]]) -> Tuple[Tuple[int, int], int]:
    """Image size and channels: the options, else the model's input shape (NHWC or NCHW), else 32x32 gray."""
    size, channels = opts.image_size, opts.channels
    if model_shape is not None and len(model_shape) == 3:
        h, w, c = model_shape if opts.layout != "NCHW" else (model_shape[1], model_shape[2], model_shape[0])
        size = size or (int(h), int(w))
        channels = channels or (int(c) if c in (1, 3) else None)
    return size or (32, 32), channels or 1


def _image_files(path: Path) -> List[Path]:
    return sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in f.relative_to(path).parts))


def _load_unlabeled_images(path: Path, size: Tuple[int, int], channels: int) -> Dataset:
    """Every image under ``path`` (subfolders included), resized and color-converted, raw 0..255."""
    from PIL import Image, UnidentifiedImageError

    mode = {1: "L", 3: "RGB"}[channels]
    xs, skipped = [], []
    files = _image_files(path)
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert(mode).resize((size[1], size[0]), Image.BILINEAR), np.float32)
        except (OSError, UnidentifiedImageError, ValueError):
            skipped.append(str(f.relative_to(path)))
            continue
        xs.append(arr.reshape(size[0], size[1], channels))
    if not xs:
        raise InputError(f"{path}: no readable images ({len(skipped)} unreadable); expected files ending in "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}.")
    return Dataset(path.name, np.stack(xs), None, [], kind="image",
                   preprocessing={"layout": "NHWC", "color": "grayscale" if channels == 1 else "rgb",
                                  "image_size": list(size), "raw_range": [0, 255]},
                   notes={"skipped_files": skipped})


def _read_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:  # OSError, ValueError (pickled or corrupt header), EOFError
        raise InputError(f"{path}: cannot read it as .npy ({' '.join(str(e).split())[:200]}); expected one "
                         "numeric array written by numpy.save.") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"{path}: expected one array in a .npy file, got {type(x).__name__}.")
    return x


def _npz_keys(path: Path) -> List[str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: cannot read it as .npz ({type(e).__name__}: {str(e)[:200]}); expected a zip "
                         "of arrays written by numpy.savez.") from None


def _x_only_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        key = "x_train" if "x_train" in z.files else "x"
        return z[key]


def _test_only_npz(path: Path) -> Dataset:
    """An .npz holding only x_test/y_test (a labelled evaluation set)."""
    with np.load(path, allow_pickle=False) as z:
        x, y = _numeric_samples(z["x_test"], f"{path} x_test"), z["y_test"]
    y, names = ds_mod._labels_to_int(y, f"{path} y_test")
    if len(y) != len(x):
        raise InputError(f"{path}: {len(x)} test samples but {len(y)} test labels.")
    kind = {2: "tabular", 3: "sequence", 4: "image"}.get(x.ndim, "tabular")
    return Dataset(path.stem, x, y, names, kind=kind, preprocessing={"input_scale": 1.0, "input_offset": 0.0})


def _numeric_samples(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "fiub":
        raise InputError(f"{where}: samples must be numeric, got dtype {x.dtype}.")
    if x.ndim < 2:
        raise InputError(f"{where}: expected one sample per row (shape (N, ...) with at least 2 dimensions), got "
                         f"shape {x.shape}. One sample? Add a batch dimension: x[None].")
    return x.astype(np.float32)


def _load_csv_features(path: Path) -> Dataset:
    import pandas as pd

    df = ds_mod.read_csv_frame(path)
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"{path}: without a label column every column is a model input and must be numeric; "
                         f"{bad[:5]} are not. A label column? Name it with --label-column.")
    return Dataset(path.stem, df.to_numpy(np.float32), None, [], kind="tabular",
                   preprocessing={"features": [str(c) for c in df.columns]})


def _csv_is_unlabeled(path: Path, label_column: Optional[str], features: Optional[int]) -> bool:
    """No label column: all columns match the model's input width, or the last column is no class label."""
    if label_column:
        return False
    import pandas as pd

    try:
        df = pd.read_csv(path, nrows=10_000)
    except (OSError, ValueError, UnicodeDecodeError):
        return False  # the labelled loader reports the problem
    if features is not None:
        if df.shape[1] == features:
            return True
        if df.shape[1] == features + 1:
            return False
    last = df.columns[-1]
    if not pd.api.types.is_numeric_dtype(df[last]) or pd.api.types.is_bool_dtype(df[last]):
        return False
    return ds_mod._label_problem(df[last].to_numpy(np.float64)) is not None


def _has_class_folders(path: Path) -> bool:
    return any(p.is_dir() and not p.name.startswith(".") and _image_files(p) for p in path.iterdir())


def _apply_scaling(ds: Dataset, opts: InputOptions, default_scale: float) -> Dataset:
    """``raw * input_scale + input_offset`` on unlabeled raw samples; the factors go into preprocessing."""
    scale = default_scale if opts.input_scale is None else float(opts.input_scale)
    offset = 0.0 if opts.input_offset is None else float(opts.input_offset)
    ds.x = (ds.x.astype(np.float32) * np.float32(scale) + np.float32(offset)).astype(np.float32)
    ds.preprocessing = dict(ds.preprocessing, input_scale=scale, input_offset=offset)
    return ds


def _rescale_labelled(ds: Dataset, opts: InputOptions) -> Dataset:
    """Labelled loaders already applied their default scale; re-apply the user's instead when given."""
    if opts.input_scale is None and opts.input_offset is None:
        return ds
    old_s = float(ds.preprocessing.get("input_scale", 1.0))
    old_o = float(ds.preprocessing.get("input_offset", 0.0))
    scale = old_s if opts.input_scale is None else float(opts.input_scale)
    offset = old_o if opts.input_offset is None else float(opts.input_offset)

    def redo(a):
        return None if a is None else ((a - np.float32(old_o)) / np.float32(old_s) * np.float32(scale)
                                       + np.float32(offset)).astype(np.float32)
    ds.x, ds.x_test = redo(ds.x), redo(ds.x_test)
    ds.preprocessing = dict(ds.preprocessing, input_scale=scale, input_offset=offset)
    return ds


def _to_layout(ds: Dataset, opts: InputOptions) -> Dataset:
    if ds.kind == "image" and opts.layout == "NCHW" and ds.x.ndim == 4:
        ds.x = np.ascontiguousarray(ds.x.transpose(0, 3, 1, 2))
        if ds.x_test is not None:
            ds.x_test = np.ascontiguousarray(ds.x_test.transpose(0, 3, 1, 2))
        ds.preprocessing = dict(ds.preprocessing, layout="NCHW")
    return ds


def _drop_single_class(ds: Dataset) -> Dataset:
    """Labels with one class cannot measure accuracy (and calibration needs none): keep the inputs only."""
    if ds.y is not None and len(np.unique(ds.y)) < 2:
        ds.notes = dict(ds.notes, labels_dropped=f"the labels hold a single class ({ds.class_names[int(ds.y[0])]})"
                        if len(ds.y) else "no labels")
        if ds.x_test is not None:
            ds.x = np.concatenate([ds.x, ds.x_test])
        ds.y = ds.y_test = ds.x_test = None
        ds.class_names = []
    return ds


def _check_unlabeled(ds: Dataset) -> Dataset:
    where = f"data {ds.name}"
    if len(ds.x) == 0:
        raise InputError(f"{where}: no samples found.")
    if not np.all(np.isfinite(ds.x)):
        raise InputError(f"{where}: samples contain NaN or Inf ({int((~np.isfinite(ds.x)).sum())} values); clean "
                         "or impute the data first.")
    return ds


def load_samples(name_or_path: str, opts: Optional[InputOptions] = None, seed: int = 0,
                 label_column: Optional[str] = None, model_shape: Optional[Sequence[int]] = None,
                 cache_dir: Optional[Path] = None) -> Dataset:
    """Load data for conversion: labelled when it has labels (and ``opts.labels`` is auto), else inputs only.

    Args:
        name_or_path: a built-in dataset name, a ``.npy``, a ``.npz`` (x_train/y_train, or only x_train or x),
            a ``.csv`` (with or without a label column) or an image folder (with or without class subfolders).
        opts: preprocessing for raw files and the label mode.
        seed: passed to synthetic built-in datasets.
        label_column: the CSV's label column (default: the last column when it holds class labels).
        model_shape: one sample of the model's input (no batch), when known: image size/channels default to it
            and a CSV with exactly that many columns has no label column.
        cache_dir: where decoded image folders / CSVs are cached.

    Returns:
        A :class:`Dataset` whose ``y`` is None when there are no (usable) labels.

    Raises:
        InputError: missing, empty or malformed data; UsageError: bad options.
    """
    opts = (opts or InputOptions()).check()
    label_column = opts.label_column or label_column
    path = Path(name_or_path)
    features = int(np.prod(model_shape)) if model_shape is not None and len(model_shape) == 1 else None
    unlabeled = None
    if name_or_path not in DATASETS and path.exists():
        suffix = path.suffix.lower()
        if path.is_dir():
            if opts.labels == "none" or not _has_class_folders(path):
                size, channels = _image_shape(opts, model_shape)
                unlabeled = _apply_scaling(_load_unlabeled_images(path, size, channels), opts, 1 / 255.0)
        elif suffix == ".npy":
            unlabeled = _apply_scaling(Dataset(path.stem, _numeric_samples(_read_npy(path), str(path)), None, []),
                                       opts, 1.0)
        elif suffix == ".npz":
            keys = _npz_keys(path)
            if {"x_test", "y_test"} <= set(keys) and not ({"x_train", "x"} & set(keys)):
                return _to_layout(_rescale_labelled(_test_only_npz(path), opts), opts)  # an --eval set
            if opts.labels == "none" or not ({"y_train", "y"} & set(keys)):
                if not ({"x_train", "x"} & set(keys)):
                    raise InputError(f"{path}: no x_train or x array (found {sorted(keys)}); expected x_train "
                                     "(optional y_train, x_test, y_test) or x alone for inputs without labels.")
                x = _numeric_samples(_x_only_npz(path), f"{path} x")
                unlabeled = _apply_scaling(Dataset(path.stem, x, None, []), opts, 1.0)
        elif suffix == ".csv" and (opts.labels == "none" or _csv_is_unlabeled(path, label_column, features)):
            unlabeled = _apply_scaling(_load_csv_features(path), opts, 1.0)
    if unlabeled is not None:
        if unlabeled.x.ndim == 2:
            unlabeled.kind = "tabular"
        elif unlabeled.x.ndim == 3:
            unlabeled.kind = "sequence"
        return _to_layout(_check_unlabeled(unlabeled), opts)
    size, channels = _image_shape(opts, model_shape)
    try:
        ds = ds_mod.load_dataset(name_or_path, seed, image_size=size, channels=channels, label_column=label_column,
                                 cache_dir=cache_dir)
    except InputError as e:
        if "only one class" not in str(e):
            raise
        ds = _load_single_class(name_or_path, size, channels, label_column)
    ds = _drop_single_class(ds)
    if ds.y is None:
        return _to_layout(_check_unlabeled(_rescale_labelled(ds, opts)), opts)
    return _to_layout(_rescale_labelled(ds, opts), opts)


def _load_single_class(name_or_path: str, size, channels, label_column) -> Dataset:
    """The labelled loaders refuse a single class (no classifier trains on it); conversion can still calibrate."""
    path = Path(name_or_path)
    if path.is_dir():
        return ds_mod._load_image_folder(path, size, channels)
    if path.suffix.lower() == ".npz":
        return ds_mod._load_npz(path)
    return ds_mod._load_csv(path, label_column)
