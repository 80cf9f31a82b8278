"""The Keras side of fitting: the tf.data input pipeline, the optimizer, the epoch guard and the history plot."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


class TrainGuard:
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


def input_pipeline(tf, keras, x, y, batch_size: int, seed: int, augment: List[str], training: bool):
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


def time_pipeline(ds) -> float:
    """Seconds per batch to produce one epoch of the input pipeline alone (no training)."""
    t0, n = time.perf_counter(), 0
    for _ in ds:
        n += 1
    return (time.perf_counter() - t0) / max(n, 1)


def make_optimizer(keras, name: str, lr: float):
    """The Keras optimizer ``name`` (one of trainer.OPTIMIZERS) at learning rate ``lr``."""
    return {"adam": lambda: keras.optimizers.Adam(lr),
            "adamw": lambda: keras.optimizers.AdamW(lr),
            "sgd": lambda: keras.optimizers.SGD(lr, momentum=0.9),
            "rmsprop": lambda: keras.optimizers.RMSprop(lr)}[name]()


def plot_history(history: Dict[str, List[float]], path: Path, title: str, best_epoch: Optional[int] = None) -> None:
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
