"""Fine-tuning for the recipes that change weights (QAT, pruning): step-based schedules, early stopping on a
validation split, the sparsity ladder, and the warning for labelled data too small for the requested change.

Why steps and not epochs: a fixed "8 epochs" is 1,100 optimizer steps on 4,500 samples but 100 on 400, and
pruning from dense to 75% in 100 steps destroys a converged model. Here the number of optimizer steps is planned
first (at least ``MIN_STEPS``, more when the data gives more per epoch), and both the learning rate (linear
warm-up, then cosine decay) and the pruning ramp are functions of the step. Repeating a small set that often
overfits it, so a validation split carved from ``--data`` is watched and the best weights are restored.

Why the ladder is decided here, on the validation split: the parity gate lives in ``edgeport.check`` (a layer
above convert), and deciding on the held-out split would leak it into the choice and leave parity nothing
independent to confirm. So each attempt's int8 artifact is run through edgeport-runtime on the validation split
and held to the recipe gate's own thresholds (``max_drop_pp``, ``max_mse_ratio``) on the point estimate; the
held-out split and its confidence bounds stay with ``edgeport parity``, which judges the chosen artifact.

This module imports no TensorFlow at module level: the planning, the decisions and the warning run in the parent
process (the pipeline) and in fast tests; :func:`fit` defers tf_keras.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edgeport_runtime import load as rt_load
from edgeport_runtime.errors import InputError

from ..data.split import stratified_split

# Highest first: the first sparsity whose artifact passes is the one kept.
SPARSITY_LADDER = (0.75, 0.5, 0.3)
# At least this many optimizer steps: ~300 steps is what a converged model needs to adapt to fake quantization;
# pruning ramps over the first half and recovers over the second half, so it gets twice that. (On 400 mnist
# samples the old 8-epoch schedule was 104 steps.)
MIN_STEPS = {"qat": 300, "prune": 600}
RAMP_FRACTION = 0.5  # pruning reaches its target at half the steps; the rest fine-tunes at the final sparsity
RAMP_UPDATES = 20  # mask updates during the ramp (tfmot prunes every `frequency` steps)
WARMUP_FRACTION = 0.1  # linear warm-up: Adam's moment estimates start at zero and overshoot at full LR
EVALUATIONS = 20  # validation passes over the run (early stopping resolution)
PATIENCE = 5  # evaluations without improvement before stopping
VAL_FRACTION = 0.2  # of --data's training split, when the data has no validation split of its own
MIN_VAL = 10  # fewer validation samples than this cannot steer early stopping at all
# Below these many fine-tuning samples the schedule repeats each sample dozens of times: warn before starting.
SMALL_DATA = {"qat": 500, "prune": 1000}


@dataclass(frozen=True)
class Schedule:
    """A step-based fine-tuning plan: learning rate and pruning ramp as functions of the optimizer step."""

    steps: int  # optimizer steps planned
    steps_per_epoch: int
    batch_size: int
    peak_lr: float
    warmup_steps: int
    ramp_end_step: int  # pruning: the step where the target sparsity is reached (0: no ramp)
    prune_frequency: int  # pruning: mask update interval in steps (ramp_end_step is a multiple of it)
    eval_every: int  # validation every this many steps
    patience: int  # evaluations without improvement before stopping

    def lr_at(self, step: int) -> float:
        """Learning rate at optimizer step ``step`` (0-based): linear warm-up to ``peak_lr``, cosine decay to 0."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        p = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        return self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * p))

    def monitored(self, step: int) -> bool:
        """Whether a validation result after ``step`` completed steps may become the restored best.

        Pruning: only once the mask is at full sparsity. tfmot applies the last mask update during the step whose
        pruning_step equals ``ramp_end_step`` (0-based), i.e. after ``ramp_end_step + 1`` completed steps.
        """
        return step > self.ramp_end_step

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (recorded in the manifest)."""
        return asdict(self)


def plan(n_fit: int, opts: Mapping[str, Any], kind: str) -> Schedule:
    """The schedule for ``n_fit`` fine-tuning samples and the recipe options ``opts``; ``kind`` is qat | prune.

    Steps: ``opts['steps']`` when > 0, else ``max(MIN_STEPS[kind], epochs * steps_per_epoch)``: small data gets
    the floor (many passes, guarded by early stopping), large data gets its epochs.
    """
    if n_fit < 1:
        raise InputError("no samples left to fine-tune on; give --data with labelled training samples.")
    bs = max(1, int(opts["batch_size"]))
    spe = math.ceil(n_fit / bs)
    steps = int(opts.get("steps") or 0)
    if steps <= 0:
        steps = max(MIN_STEPS[kind], int(opts["epochs"]) * spe)
    warmup = max(1, round(WARMUP_FRACTION * steps))
    ramp_end = freq = 0
    if kind == "prune":
        # The mask only updates every `freq` steps, so the ramp ends on a multiple of it (else the target is
        # never reached).
        end = max(1, int(steps * RAMP_FRACTION))
        freq = max(1, end // RAMP_UPDATES)
        ramp_end = (end // freq) * freq
    return Schedule(steps=steps, steps_per_epoch=spe, batch_size=bs, peak_lr=float(opts["lr"]),
                    warmup_steps=warmup, ramp_end_step=ramp_end, prune_frequency=freq,
                    eval_every=max(1, steps // EVALUATIONS), patience=PATIENCE)


def validation_split(x: np.ndarray, y: Optional[np.ndarray], val_x: Optional[np.ndarray],
                     val_y: Optional[np.ndarray], seed: int
                     ) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """(x_fit, y_fit, x_val, y_val): the data's own validation split, else ``VAL_FRACTION`` carved from ``x``.

    Carved stratified by class when ``y`` allows it (else a seeded random cut); never from the held-out split.
    """
    if val_x is not None and len(val_x) >= MIN_VAL:
        return x, y, val_x, val_y
    n_val = max(MIN_VAL, int(round(VAL_FRACTION * len(x))))
    if len(x) < 2 * n_val:
        raise InputError(f"{len(x)} labelled training samples are too few to fine-tune with early stopping "
                         f"(needs {2 * n_val}: {n_val} for validation and as many to train on); give --data with "
                         "more labelled samples or leave the QAT and pruning recipes out (--recipes).")
    if y is not None:
        try:
            xf, xv, yf, yv = stratified_split(x, y, n_val / len(x), seed)
            return xf, yf, xv, yv
        except InputError:  # a class with a single sample cannot be stratified: fall back to a random cut
            pass
    idx = np.random.default_rng(seed).permutation(len(x))
    fit_i, val_i = np.sort(idx[n_val:]), np.sort(idx[:n_val])
    return x[fit_i], (y[fit_i] if y is not None else None), x[val_i], (y[val_i] if y is not None else None)


def judge(task: str, gate, y: Optional[np.ndarray], keras_out: np.ndarray, art_out: np.ndarray) -> Dict[str, Any]:
    """An artifact's result on the validation split against the recipe gate's thresholds (point estimates).

    Classification: passes when its accuracy drop vs Keras is at most ``gate.max_drop_pp`` (a model that is
    better never fails). Autoencoder: when its reconstruction MSE is at most ``gate.max_mse_ratio`` x Keras.
    """
    n = len(keras_out)
    if task == "autoencoder":
        flat_true = None if y is None else y.reshape(n, -1)
        mse_a = float(np.mean((art_out.reshape(n, -1) - flat_true) ** 2))
        mse_k = float(np.mean((keras_out.reshape(n, -1) - flat_true) ** 2))
        return {"metric": "reconstruction_mse", "value": round(mse_a, 6), "keras_value": round(mse_k, 6),
                "passed": bool(mse_a <= gate.max_mse_ratio * mse_k), "samples": n}
    acc_a = float((art_out.reshape(n, -1).argmax(1) == y).mean())
    acc_k = float((keras_out.reshape(n, -1).argmax(1) == y).mean())
    delta = 100.0 * (acc_a - acc_k)
    return {"metric": "accuracy", "value": round(acc_a, 4), "keras_value": round(acc_k, 4),
            "delta_pp": round(delta, 2), "passed": bool(-delta <= gate.max_drop_pp + 1e-9), "samples": n}


def ladder(targets: Sequence[float], attempt: Callable[[float], Dict[str, Any]]
           ) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
    """Try ``targets`` in order (highest sparsity first); stop at the first whose attempt has ``passed``.

    Returns (the passing attempt or None, every attempt made, in order).
    """
    attempts = []
    for s in targets:
        a = attempt(float(s))
        attempts.append(a)
        if a.get("passed"):
            return a, attempts
    return None, attempts


def sparsity_targets(opts: Mapping[str, Any]) -> Tuple[List[float], bool]:
    """(sparsities to try, searched?): the user's ``sparsity`` when set (> 0), else :data:`SPARSITY_LADDER`."""
    s = float(opts.get("sparsity") or 0.0)
    return ([s], False) if s > 0 else (list(SPARSITY_LADDER), True)


def describe_attempt(a: Mapping[str, Any]) -> str:
    """One attempt as text: 'sparsity 0.75: accuracy 0.9125 vs Keras 0.9750 (-6.25 pp), gzip 40.1 KiB'."""
    if a.get("metric") == "reconstruction_mse":
        res = f"MSE {a['value']:.4g} vs Keras {a['keras_value']:.4g}"
    else:
        res = f"accuracy {a['value']:.4f} vs Keras {a['keras_value']:.4f} ({a['delta_pp']:+.2f} pp)"
    return f"sparsity {a['target_sparsity']:g}: {res}, gzip {a['gzip_bytes'] / 1024:.1f} KiB"


def not_achievable(attempts: Sequence[Mapping[str, Any]], gate, n_fit: int) -> str:
    """The message when no sparsity of the ladder passes: every attempt's numbers and what would help."""
    limit = (f"max drop {gate.max_drop_pp:g} pp" if attempts and attempts[0].get("metric") == "accuracy"
             else f"max MSE ratio {gate.max_mse_ratio:g}")
    tried = "; ".join(describe_attempt(a) for a in attempts)
    ladder_text = ", ".join(f"{a['target_sparsity']:g}" for a in attempts)
    return (f"not achievable with this data: no sparsity of {ladder_text} "
            f"kept the validation result within the gate ({limit}) after fine-tuning on {n_fit} samples ({tried}). "
            "More labelled samples (--data) or a lower fixed sparsity ([convert.options.tflite-int8-pruned] "
            "sparsity = 0.2) may reach it; tflite-int8 is unaffected.")


def small_data_warning(recipe: str, kind: str, n_train: int, n_val: Optional[int], opts: Mapping[str, Any]
                       ) -> Optional[str]:
    """A warning (or None) before fine-tuning ``recipe`` on ``n_train`` labelled samples, stating the numbers.

    ``n_val``: the data's own validation samples (None: a validation split is carved from ``n_train``).
    """
    n_fit = n_train if n_val else n_train - max(MIN_VAL, int(round(VAL_FRACTION * n_train)))
    if n_train >= SMALL_DATA[kind] or n_fit < 1:
        return None
    s = plan(n_fit, opts, kind)
    repeats = s.steps * s.batch_size / n_fit
    if kind == "prune":
        targets, searched = sparsity_targets(opts)
        change = (f"removing {targets[0]:.0%} of the weights" + (" (then less, down to "
                  f"{targets[-1]:.0%}, if that fails)" if searched else ""))
    else:
        change = "adapting to int8 fake quantization"
    held = "" if n_val else f" ({n_train - n_fit} more held for early stopping)"
    return (f"{recipe}: fine-tuning on {n_fit} labelled samples{held}: {s.steps} optimizer steps of {s.batch_size} "
            f"repeat each sample ~{repeats:.0f} times for {change}; below {SMALL_DATA[kind]} samples the model "
            "may overfit or lose accuracy. More labelled data (--data) helps most.")


def predict_tflite(data: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs of a .tflite (given as bytes) on ``x`` through edgeport-runtime, the code path devices use."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "attempt.tflite"
        p.write_bytes(data)
        with rt_load(p, num_threads=1) as m:
            return np.asarray(m.predict(x.astype(np.float32)), np.float32)


def freeze_batchnorm(model):
    """Freeze every BatchNormalization layer of tf_keras ``model`` (statistics and scale/offset); return it.

    Frozen rather than folded: the converged model's moving statistics are what the TFLite converter folds into
    the preceding convolution at export, so training against them keeps the function QAT/pruning sees identical
    to the one that ships. Batch statistics of a few hundred samples at batch 32 are noisy, and letting them
    update the moving averages (or folding them in while training) shifts every downstream activation range
    and undoes the converged model instead of fine-tuning it. A tf_keras BatchNormalization with
    ``trainable = False`` also runs in inference mode (moving statistics) during fit.
    """
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = False
    return model


def _loss(task: str, out: np.ndarray, y: np.ndarray) -> float:
    if task == "autoencoder":
        return float(np.mean((out.reshape(len(out), -1) - y.reshape(len(y), -1)) ** 2))
    p = np.clip(out.reshape(len(out), -1)[np.arange(len(y)), y.astype(int)], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def fit(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, task: str,
        schedule: Schedule, seed: int, callbacks: Sequence[Any] = ()) -> Dict[str, Any]:
    """Compile and fit tf_keras ``model`` for ``schedule.steps`` steps; restore the best validation weights.

    The learning rate is set before every step from :meth:`Schedule.lr_at`; validation loss is measured every
    ``eval_every`` steps, counted only where :meth:`Schedule.monitored` (pruning: at full sparsity), and training
    stops after ``patience`` evaluations without improvement. Returns what happened (for the manifest).
    """
    import tf_keras

    class _Steps(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step, self.best, self.best_step, self.best_weights, self.waited = 0, math.inf, None, None, 0

        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate.assign(schedule.lr_at(self.step))

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % schedule.eval_every == 0 or self.step >= schedule.steps:
                self._evaluate()
            if self.step >= schedule.steps or self.waited >= schedule.patience:
                self.model.stop_training = True

        def _evaluate(self):
            if not schedule.monitored(self.step):
                return
            out = np.concatenate([np.asarray(self.model(x_val[i:i + 256], training=False))
                                  for i in range(0, len(x_val), 256)])
            loss = _loss(task, out, y_val)
            if loss < self.best - 1e-6:
                self.best, self.best_step, self.waited = loss, self.step, 0
                self.best_weights = self.model.get_weights()
            else:
                self.waited += 1

    track = _Steps()
    opt = tf_keras.optimizers.Adam(schedule.peak_lr)
    if task == "autoencoder":
        y, y_val = x.reshape(len(x), -1), x_val.reshape(len(x_val), -1)
        model.compile(opt, loss="mse")
    else:
        model.compile(opt, loss="sparse_categorical_crossentropy")
    tf_keras.utils.set_random_seed(seed)
    epochs = math.ceil(schedule.steps / schedule.steps_per_epoch)
    model.fit(x, y, epochs=epochs, batch_size=schedule.batch_size, callbacks=[*callbacks, track], verbose=0,
              shuffle=True)
    if track.best_weights is not None:
        model.set_weights(track.best_weights)
    return {"steps_run": track.step, "best_step": track.best_step,
            "best_val_loss": None if track.best_step is None else round(track.best, 5),
            "stopped_early": track.step < schedule.steps}
