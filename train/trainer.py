"""CPU training of zoo models: splits, tf.data pipeline, early stopping, Ctrl-C, profiling, outputs.

Outputs written into the run directory (all at once, via a staged temp directory):
``model.keras``, ``train.json``, ``history.png``, ``train.npz`` (training + validation split, the only data later
stages may calibrate or fine-tune on) and ``test.npz`` (the held-out split, for evaluation only).
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgeport_runtime.errors import InputError, UsageError, unknown_name
from edgeport_runtime.manifest import atomic_write_text

from ..core import tfenv
from ..core.fsutil import check_out_dir, staged_dir
from ..core.paths import default_cache_dir
from ..data.datasets import Dataset, load_dataset, skipped_summary
from ..data.preprocess import describe, standardize_splits
from ..data.split import stratified_split
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
        from ..core.config import check_types

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


class _TrainGuard:
    """Keras callback: best-weights tracking, patience, Ctrl-C, per-epoch timing. One object, one concern each."""

    def __init__(self, keras, patience: int, n_train: int):
        outer = self
        self.best_loss = float("inf")
        self.best_weights = None
        self.best_epoch = -1
        self.wait = 0
        self.patience = patience
        self.interrupted = False
        self.nonfinite: Optional[str] = None
        self.epoch_stats: List[Dict[str, float]] = []
        self.n_train = n_train

        class CB(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer._t0 = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                outer._check_finite(self.model, (logs or {}).get("loss"), f"batch {batch + 1}")
                if outer.interrupted:
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                outer._check_finite(self.model, logs.get("val_loss"), f"epoch {epoch + 1} (validation)")
                dt = time.perf_counter() - outer._t0
                outer.epoch_stats.append({"epoch": epoch + 1, "seconds": round(dt, 3),
                                          "samples_per_s": round(outer.n_train / dt, 1)})
                loss = logs.get("val_loss", logs.get("loss"))
                if loss is not None and loss < outer.best_loss:
                    outer.best_loss, outer.best_epoch, outer.wait = float(loss), epoch + 1, 0
                    outer.best_weights = self.model.get_weights()
                else:
                    outer.wait += 1
                    if outer.patience and outer.wait >= outer.patience:
                        self.model.stop_training = True
                if outer.interrupted:
                    self.model.stop_training = True

        self.callback = CB()

    def _check_finite(self, model, loss, where: str) -> None:
        """Stop at the first NaN/Inf loss: the weights are garbage from then on and must not be saved."""
        if loss is not None and not np.isfinite(float(loss)) and self.nonfinite is None:
            self.nonfinite = f"{where}: loss is {float(loss)}"
            model.stop_training = True

    def on_sigint(self, signum, frame):
        """SIGINT/SIGTERM: first one stops after this batch and saves; a second aborts without saving."""
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        if self.interrupted:  # second signal: abort now; the staged output directory is discarded
            raise KeyboardInterrupt
        self.interrupted = True
        print(f"\n{name}: stopping after this batch and saving the best model so far "
              f"({name} again to abort without saving).", file=sys.stderr)


def _pipeline(tf, keras, x, y, batch_size: int, seed: int, augment: List[str], training: bool):
    """tf.data: cache -> shuffle (seeded) -> batch -> augment (parallel) -> prefetch."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        layers = []
        if "flip" in augment:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if "zoom" in augment:
            layers.append(keras.layers.RandomZoom(0.1, seed=seed))
        if "shift" in augment:
            layers.append(keras.layers.RandomTranslation(0.1, 0.1, seed=seed))
        aug = keras.Sequential(layers, name="augment")
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _time_pipeline(ds) -> float:
    """Seconds per batch to produce one epoch of the input pipeline alone (no training)."""
    t0, n = time.perf_counter(), 0
    for _ in ds:
        n += 1
    return (time.perf_counter() - t0) / max(n, 1)


def _optimizer(keras, name: str, lr: float):
    return {"adam": lambda: keras.optimizers.Adam(lr),
            "adamw": lambda: keras.optimizers.AdamW(lr),
            "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9),
            "rmsprop": lambda: keras.optimizers.RMSprop(lr)}[name]()


def evaluate(model, task: str, x, y, class_names: List[str], batch_size: int = 256) -> Dict[str, Any]:
    """The task metric on (x, y): accuracy and per-class accuracy, or reconstruction MSE for autoencoders."""
    pred = np.asarray(model(x, training=False)) if len(x) <= 4096 else model.predict(x, batch_size, verbose=0)
    if task == "autoencoder":
        err = np.mean((pred - x.reshape(len(x), -1)) ** 2, axis=1)
        return {"test_reconstruction_mse": float(err.mean()), "metric": "reconstruction_mse"}
    top = pred.argmax(axis=1)
    per_class = {class_names[c]: float((top[y == c] == c).mean()) for c in np.unique(y)}
    return {"test_accuracy": float((top == y).mean()), "per_class_accuracy": per_class, "metric": "accuracy"}


def _plot_history(history: Dict[str, List[float]], path: Path, title: str, best_epoch: Optional[int] = None) -> None:
    """Loss/accuracy per epoch (integer ticks), with the epoch whose weights were restored marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metrics = [m for m in ("loss", "accuracy") if m in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        ep = range(1, len(history[m]) + 1)
        ax.plot(ep, history[m], marker=".", label=f"train {m}")
        if f"val_{m}" in history:
            ax.plot(ep, history[f"val_{m}"], marker=".", label=f"val {m}")
        if best_epoch is not None and 1 <= best_epoch <= len(history[m]):
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"restored: epoch {best_epoch}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_title(m)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def _inputs(cfg: TrainConfig) -> List[Path]:
    """Paths `train` reads: --out may not overlap them (a --force there would delete the data)."""
    from ..data.datasets import DATASETS

    return [Path(cfg.dataset)] if cfg.dataset not in DATASETS and Path(cfg.dataset).exists() else []


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
    cache_dir = default_cache_dir() if cfg.cache else None
    ds: Dataset = load_dataset(cfg.dataset, cfg.seed, tuple(cfg.image_size), cfg.channels, cfg.label_column,
                               cache_dir)
    task = MODELS[cfg.model].task
    if cfg.augment and ds.kind != "image":
        raise UsageError(f"--augment {','.join(cfg.augment)} applies to images; dataset {ds.name} holds "
                         f"{ds.kind} data. Drop --augment.")

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

    tf = tfenv.import_tf()
    applied = tfenv.configure_cpu(cfg.allow_gpu, cfg.threads)
    import keras

    keras.utils.set_random_seed(cfg.seed)  # alone gives bit-identical weights on one machine (tested)
    options = {"width": cfg.width} if cfg.model == "mobilenet_v1" else {}
    model = build_model(cfg.model, ds.sample_shape, len(ds.class_names), **options)
    if task == "autoencoder":
        model.compile(_optimizer(keras, cfg.optimizer, cfg.lr), loss="mse")
        targets = lambda a, b: a.reshape(len(a), -1)  # noqa: E731
    else:
        model.compile(_optimizer(keras, cfg.optimizer, cfg.lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        targets = lambda a, b: b  # noqa: E731
    train_ds = _pipeline(tf, keras, x_train, targets(x_train, y_train), cfg.batch_size, cfg.seed, cfg.augment, True)
    val_ds = (_pipeline(tf, keras, x_val, targets(x_val, y_val), 256, cfg.seed, [], False)
              if x_val is not None else None)

    guard = _TrainGuard(keras, cfg.patience, len(x_train))
    pipeline_s = _time_pipeline(train_ds) if cfg.profile else None
    verbose = 0 if cfg.quiet else (1 if sys.stdout.isatty() else 2)
    old_handlers = {s: signal.signal(s, guard.on_sigint) for s in (signal.SIGINT, signal.SIGTERM)}
    t_fit = time.perf_counter()
    try:
        hist = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=[guard.callback],
                         verbose=verbose, shuffle=False)  # the pipeline shuffles (seeded)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    fit_seconds = time.perf_counter() - t_fit
    if guard.nonfinite:
        raise InputError(f"training diverged at {guard.nonfinite}; no model was written. Scale the inputs "
                         f"(e.g. to [0, 1]), lower --lr (now {cfg.lr}) or check the data for huge values.")
    if guard.best_weights is not None:
        model.set_weights(guard.best_weights)

    results = evaluate(model, task, x_test, y_test, ds.class_names)
    record: Dict[str, Any] = {
        "dataset": ds.name, "dataset_arg": cfg.dataset, "task": task, "model": cfg.model,
        "input_shape": list(ds.sample_shape), "class_names": ds.class_names, "preprocessing": preprocessing,
        "splits": {"train": int(len(x_train)), "val": int(0 if x_val is None else len(x_val)),
                   "test": int(len(x_test)), "test_source": test_source},
        "seed": cfg.seed, "params": int(model.count_params()), "macs": count_macs(model),
        "epochs_run": len(hist.history.get("loss", [])), "best_epoch": guard.best_epoch,
        "interrupted": guard.interrupted, "fit_seconds": round(fit_seconds, 2),
        **results,
        "devices": tfenv.devices_used(), "threads": applied,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("force", "quiet")},
        "versions": tfenv.package_versions(),
        "data_notes": {k: v for k, v in ds.notes.items() if k != "cache_file"},
    }
    if cfg.profile:
        steps = int(np.ceil(len(x_train) / cfg.batch_size))
        for e in guard.epoch_stats:
            step_s = e["seconds"] / steps
            e["step_ms"] = round(1000 * step_s, 3)
        mean_step = np.mean([e["step_ms"] for e in guard.epoch_stats]) / 1000
        record["profile"] = {
            "epochs": guard.epoch_stats,
            "input_pipeline_ms_per_batch": round(1000 * pipeline_s, 3),
            # Keras fetches batches inside its compiled step, so the wait cannot be timed per step from Python.
            # We time the pipeline alone; with prefetch the step waits only where producing a batch is slower
            # than training on one, so this share is an upper bound on the time lost to input.
            "input_wait_share_upper_bound": round(min(1.0, pipeline_s / mean_step), 3),
        }

    with staged_dir(cfg.out, cfg.force, "train", inputs) as tmp:
        model.save(tmp / "model.keras")
        _save_npz(tmp / "train.npz", x_train=x_train, y_train=y_train,
                  **({"x_val": x_val, "y_val": y_val} if x_val is not None else {}))
        _save_npz(tmp / "test.npz", x_test=x_test, y_test=y_test)
        _plot_history(hist.history, tmp / "history.png", f"{cfg.model} on {ds.name}",
                      guard.best_epoch if guard.best_weights is not None else None)
        record["wall_seconds"] = round(time.perf_counter() - t_start, 2)
        atomic_write_text(tmp / "train.json", json.dumps(record, indent=2) + "\n")
    return record
