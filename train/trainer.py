"""CPU training of zoo models, in named steps: load data, split, build, fit, evaluate, write the run directory.

Outputs written into the run directory (all at once, via a staged temp directory):
``model.keras``, ``train.json``, ``history.png``, ``train.npz`` (training + validation split, the only data later
stages may calibrate or fine-tune on) and ``test.npz`` (the held-out split, for evaluation only).
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgeport_runtime.errors import InputError, UsageError, unknown_name

from ..core import tfenv
from ..core.config import check_types
from ..core.fsutil import check_out_dir, staged_dir
from ..core.paths import default_cache_dir
from ..data import run
from ..data.datasets import DATASETS, Dataset, load_dataset, skipped_summary
from ..data.preprocess import describe, standardize_splits
from ..data.split import stratified_split
from .fit import TrainGuard, input_pipeline, make_optimizer, plot_history, time_pipeline
from .zoo import MODELS, build_model, count_macs

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
AUGMENTATIONS = ("flip", "zoom", "shift")


@dataclass
class TrainConfig:
    """Everything `edgeport train` accepts; the TOML config keys are these field names."""

    dataset: str = "digits"
    model: str = "tiny_cnn"
    out: str = "runs/default"
    epochs: int = 40
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 3e-3
    seed: int = 0
    threads: Optional[int] = None
    val_split: float = 0.1
    test_split: float = 0.2
    patience: int = 6
    augment: List[str] = field(default_factory=list)
    image_size: List[int] = field(default_factory=lambda: [32, 32])
    channels: int = 1
    label_column: Optional[str] = None
    standardize: bool = True  # tabular features -> mean 0, std 1 (statistics from the training split)
    width: float = 0.25
    max_samples: Optional[int] = None
    cache: bool = True
    allow_gpu: bool = False
    profile: bool = False
    force: bool = False
    quiet: bool = False

    def check(self) -> "TrainConfig":
        """Validate types and values; raise UsageError naming the option, the value and the valid range."""
        check_types({k: v for k, v in asdict(self).items() if v is not None}, CONFIG_TYPES, "train config")
        if self.model not in MODELS:
            raise unknown_name("model", self.model, MODELS)
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        for a in self.augment:
            if a not in AUGMENTATIONS:
                raise unknown_name("augmentation", a, AUGMENTATIONS)
        for name, lo, hi in (("val_split", 0.0, 0.5), ("test_split", 0.05, 0.5)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise UsageError(f"--{name.replace('_', '-')} must be in [{lo}, {hi}], got {v}.")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.lr <= 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}.")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {self.threads}.")
        if not isinstance(self.standardize, bool):
            raise UsageError(f"standardize must be true or false, got {self.standardize!r}.")
        if len(self.image_size) != 2:
            raise UsageError(f"--image-size takes HEIGHT WIDTH, got {self.image_size}.")
        return self


# The type each TrainConfig field takes in a TOML file (checked key by key before TrainConfig is built).
CONFIG_TYPES: Dict[str, Any] = {
    "dataset": str, "model": str, "out": str, "optimizer": str, "label_column": str,
    "epochs": int, "batch_size": int, "seed": int, "threads": int, "patience": int, "channels": int,
    "max_samples": int, "lr": float, "val_split": float, "test_split": float, "width": float,
    "cache": bool, "allow_gpu": bool, "profile": bool, "force": bool, "quiet": bool,
    "augment": ("list", str), "image_size": ("list", int),
}


def config_keys() -> List[str]:
    """The keys a TOML config file may hold for `edgeport train`."""
    return [f.name for f in fields(TrainConfig)]


def evaluate(model, task: str, x, y, class_names: List[str], batch_size: int = 256) -> Dict[str, Any]:
    """The task metric on (x, y): accuracy and per-class accuracy, or reconstruction MSE for autoencoders."""
    pred = np.asarray(model(x, training=False)) if len(x) <= 4096 else model.predict(x, batch_size, verbose=0)
    if task == "autoencoder":
        err = np.mean((pred - x.reshape(len(x), -1)) ** 2, axis=1)
        return {"test_reconstruction_mse": float(err.mean()), "metric": "reconstruction_mse"}
    top = pred.argmax(axis=1)
    per_class = {class_names[c]: float((top[y == c] == c).mean()) for c in np.unique(y)}
    return {"test_accuracy": float((top == y).mean()), "per_class_accuracy": per_class, "metric": "accuracy"}


def _inputs(cfg: TrainConfig) -> List[Path]:
    """Paths `train` reads: --out may not overlap them (a --force there would delete the data)."""
    return [Path(cfg.dataset)] if cfg.dataset not in DATASETS and Path(cfg.dataset).exists() else []


@dataclass
class _Splits:
    """The run's train / validation / held-out splits, preprocessed with training-split statistics."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: Optional[np.ndarray]
    y_val: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: np.ndarray
    test_source: str  # how the held-out split was made (train.json)
    preprocessing: Dict[str, Any]


@dataclass
class _Fit:
    """What fitting produced: the Keras history, the guard's record, and timings."""

    history: Dict[str, List[float]]
    guard: TrainGuard
    seconds: float
    pipeline_s: Optional[float]  # --profile: seconds per batch of the input pipeline alone


def train(cfg: TrainConfig) -> Dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset`` on the CPU and write the run directory ``cfg.out``.

    Returns:
        The train.json record (also written to ``cfg.out/train.json``).

    Raises:
        UsageError: bad options, existing output without ``force``.
        InputError: bad data.
    """
    cfg.check()
    t_start = time.perf_counter()
    inputs = _inputs(cfg)
    check_out_dir(cfg.out, cfg.force, inputs)  # fail before the slow part
    ds, task = _load_data(cfg)
    splits = _split(cfg, ds)
    tf = tfenv.import_tf()
    threads = tfenv.configure_cpu(cfg.allow_gpu, cfg.threads)
    import keras

    model, targets = _build(cfg, keras, ds, task)
    fit = _fit(cfg, tf, keras, model, splits, targets)
    record = _record(cfg, ds, task, splits, model, fit, threads)
    _write_run(cfg, inputs, model, splits, fit, record, ds.name, t_start)
    return record


def _load_data(cfg: TrainConfig):
    """The dataset (from the cache when allowed) and the model's task; refuses options the data cannot take."""
    cache_dir = default_cache_dir() if cfg.cache else None
    ds: Dataset = load_dataset(cfg.dataset, cfg.seed, tuple(cfg.image_size), cfg.channels, cfg.label_column,
                               cache_dir)
    if cfg.augment and ds.kind != "image":
        raise UsageError(f"--augment {','.join(cfg.augment)} applies to images; dataset {ds.name} holds "
                         f"{ds.kind} data. Drop --augment.")
    return ds, MODELS[cfg.model].task


def _split(cfg: TrainConfig, ds: Dataset) -> _Splits:
    """--max-samples, the held-out split (the dataset's own, else stratified), validation, then standardizing."""
    x, y = ds.x, ds.y
    if cfg.max_samples and cfg.max_samples < len(x):
        x, _, y, _ = stratified_split(x, y, 1 - cfg.max_samples / len(x), cfg.seed)
    if ds.x_test is not None:
        x_train, y_train, x_test, y_test = x, y, ds.x_test, ds.y_test
        test_source = "given by the dataset (x_test/y_test)"
    else:
        x_train, x_test, y_train, y_test = stratified_split(x, y, cfg.test_split, cfg.seed)
        test_source = f"{cfg.test_split:.0%} stratified split, seed {cfg.seed}"
    x_val = y_val = None
    if cfg.val_split > 0:
        x_train, x_val, y_train, y_val = stratified_split(x_train, y_train, cfg.val_split, cfg.seed + 1)
    # after the splits, so the statistics come from the training split only
    x_train, x_val, x_test, preprocessing = standardize_splits(ds.kind, ds.preprocessing, cfg.standardize,
                                                               x_train, x_val, x_test)
    for line in filter(None, (skipped_summary(ds.notes, "train.json data_notes"), describe(preprocessing))):
        print(line, flush=True)  # on screen before the (long) fit, not only in train.json
    return _Splits(x_train, y_train, x_val, y_val, x_test, y_test, test_source, preprocessing)


def _build(cfg: TrainConfig, keras, ds: Dataset, task: str):
    """The compiled zoo model (seeded) and ``targets(x, y)``, what the loss compares the outputs with."""
    keras.utils.set_random_seed(cfg.seed)  # alone gives bit-identical weights on one machine (tested)
    options = {"width": cfg.width} if cfg.model == "mobilenet_v1" else {}
    model = build_model(cfg.model, ds.sample_shape, len(ds.class_names), **options)
    if task == "autoencoder":
        model.compile(make_optimizer(keras, cfg.optimizer, cfg.lr), loss="mse")
        targets = lambda a, b: a.reshape(len(a), -1)  # noqa: E731
    else:
        model.compile(make_optimizer(keras, cfg.optimizer, cfg.lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        targets = lambda a, b: b  # noqa: E731
    return model, targets


def _fit(cfg: TrainConfig, tf, keras, model, s: _Splits, targets) -> _Fit:
    """Fit with early stopping and Ctrl-C handling; restore the best epoch's weights; refuse a diverged run."""
    train_ds = input_pipeline(tf, keras, s.x_train, targets(s.x_train, s.y_train), cfg.batch_size, cfg.seed,
                         cfg.augment, True)
    val_ds = (input_pipeline(tf, keras, s.x_val, targets(s.x_val, s.y_val), 256, cfg.seed, [], False)
              if s.x_val is not None else None)
    guard = TrainGuard(keras, cfg.patience, len(s.x_train))
    pipeline_s = time_pipeline(train_ds) if cfg.profile else None
    verbose = 0 if cfg.quiet else (1 if sys.stdout.isatty() else 2)
    old_handlers = {sig: signal.signal(sig, guard.on_sigint) for sig in (signal.SIGINT, signal.SIGTERM)}
    t_fit = time.perf_counter()
    try:
        hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=[guard.callback],
                         verbose=verbose, shuffle=False)  # the pipeline shuffles (seeded)
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    fit_seconds = time.perf_counter() - t_fit
    if guard.nonfinite:
        raise InputError(f"training diverged at {guard.nonfinite}; no model was written. Scale the inputs "
                         f"(e.g. to [0, 1]), lower --lr (now {cfg.lr}) or check the data for huge values.")
    if guard.best_weights is not None:
        model.set_weights(guard.best_weights)
    return _Fit(hist.history, guard, fit_seconds, pipeline_s)


def _record(cfg: TrainConfig, ds: Dataset, task: str, s: _Splits, model, fit: _Fit, threads) -> Dict[str, Any]:
    """Evaluate on the held-out split and assemble the train.json record."""
    results = evaluate(model, task, s.x_test, s.y_test, ds.class_names)
    record: Dict[str, Any] = {
        "dataset": ds.name, "dataset_arg": cfg.dataset, "task": task, "model": cfg.model,
        "input_shape": list(ds.sample_shape), "class_names": ds.class_names, "preprocessing": s.preprocessing,
        "splits": {"train": int(len(s.x_train)), "val": int(0 if s.x_val is None else len(s.x_val)),
                   "test": int(len(s.x_test)), "test_source": s.test_source},
        "seed": cfg.seed, "params": int(model.count_params()), "macs": count_macs(model),
        "epochs_run": len(fit.history.get("loss", [])), "best_epoch": fit.guard.best_epoch,
        "interrupted": fit.guard.interrupted, "fit_seconds": round(fit.seconds, 2),
        **results,
        "devices": tfenv.devices_used(), "threads": threads,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("force", "quiet")},
        "versions": tfenv.package_versions(),
        "data_notes": {k: v for k, v in ds.notes.items() if k != "cache_file"},
    }
    if cfg.profile:
        record["profile"] = _profile(cfg, fit, len(s.x_train))
    return record


def _profile(cfg: TrainConfig, fit: _Fit, n_train: int) -> Dict[str, Any]:
    """--profile: per-epoch step times and the input pipeline's share of a step (an upper bound)."""
    steps = int(np.ceil(n_train / cfg.batch_size))
    for e in fit.guard.epoch_stats:
        step_s = e["seconds"] / steps
        e["step_ms"] = round(1000 * step_s, 3)
    mean_step = np.mean([e["step_ms"] for e in fit.guard.epoch_stats]) / 1000
    return {
        "epochs": fit.guard.epoch_stats,
        "input_pipeline_ms_per_batch": round(1000 * fit.pipeline_s, 3),
        # Keras fetches batches inside its compiled step, so the wait cannot be timed per step from Python.
        # We time the pipeline alone; with prefetch the step waits only where producing a batch is slower
        # than training on one, so this share is an upper bound on the time lost to input.
        "input_wait_share_upper_bound": round(min(1.0, fit.pipeline_s / mean_step), 3),
    }


def _write_run(cfg: TrainConfig, inputs: List[Path], model, s: _Splits, fit: _Fit, record: Dict[str, Any],
               dataset_name: str, t_start: float) -> None:
    """Write the run directory in one step (staged, renamed into place): model, splits, plot, train.json."""
    with staged_dir(cfg.out, cfg.force, "train", inputs) as tmp:
        model.save(tmp / run.MODEL_FILE)
        run.write_splits(tmp, s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test)
        plot_history(fit.history, tmp / run.HISTORY_FILE, f"{cfg.model} on {dataset_name}",
                     fit.guard.best_epoch if fit.guard.best_weights is not None else None)
        record["wall_seconds"] = round(time.perf_counter() - t_start, 2)
        run.write_record(tmp, record)
