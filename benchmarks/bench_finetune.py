"""Fine-tuning recipes on converged models with little and with all labelled data (numbers in the README).

Usage: .venv/bin/python benchmarks/bench_finetune.py [DATASET:MODEL ...]   (default digits:tiny_cnn mnist:resnet8)

Each pair is trained with the defaults (early stopping: converged) into a temporary directory, then converted with
tflite-int8, tflite-int8-qat and tflite-int8-pruned (sparsity search) twice: with `--data` holding 500 labelled
samples of the run's training split, and with the whole run (all of its training split). Both are judged by
`edgeport parity` on the run's own held-out test split, so the rows of one model are comparable. Prints, per
model and data size, the sparsity the search chose (or why none), the gzip sizes and the accuracy deltas vs Keras.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeport.check.parity import parity
from edgeport.convert.pipeline import ConvertConfig, convert
from edgeport.convert.recipes import plan_recipes
from edgeport.data.run import calibration_samples
from edgeport.train.trainer import TrainConfig, train

RECIPES = "tflite-int8,tflite-int8-qat,tflite-int8-pruned"
SMALL = 500


def _small_npz(run: Path, path: Path) -> Path:
    """SMALL labelled samples drawn (stratified, seeded) from the run's training split; its test split as is."""
    tr, te = np.load(run / "train.npz"), np.load(run / "test.npz")
    x, y = tr["x_train"], tr["y_train"]
    pick = calibration_samples(np.arange(len(x)), y, SMALL, 0)  # stratified indices
    np.savez(path, x_train=x[pick], y_train=y[pick], x_test=te["x_test"], y_test=te["y_test"])
    return path


def _row(dataset, model, size, n_fit, man, rep, seconds):
    arts = {a.name: a for a in man.artifacts}
    par = {p.name: p for p in rep.artifacts if p.backend == "litert"}
    pruned = arts.get("tflite-int8-pruned")
    if pruned is not None:
        chosen = f"{pruned.extra['target_sparsity']:g}"
        tried = ",".join(f"{a['target_sparsity']:g}{'+' if a['passed'] else '-'}"
                         for a in pruned.extra["sparsity_search"])
        p = par["tflite-int8-pruned"]
        pruned_txt = (f"{chosen:>6} {tried:<16} {pruned.gzip_bytes / 1024:>8.1f} {p.delta_pp:>+7.2f} "
                      f"{p.outcome:>12}")
    else:
        why = man.skipped.get("tflite-int8-pruned", "?")
        pruned_txt = f"{'none':>6} {'(see below)':<16} {'-':>8} {'-':>7} {'-':>12}"
        print(f"  not achievable: {why}")
    q = par.get("tflite-int8-qat")
    qat_txt = f"{q.delta_pp:>+7.2f} {q.outcome:>12}" if q else f"{'-':>7} {'skipped':>12}"
    i8 = par["tflite-int8"]
    print(f"{dataset:<8} {model:<10} {size:>5} {n_fit:>5} {pruned_txt} {arts['tflite-int8'].gzip_bytes / 1024:>8.1f} "
          f"{i8.delta_pp:>+7.2f} {qat_txt} {seconds:>7.0f}", flush=True)


def main(pairs):
    print(f"{'dataset':<8} {'model':<10} {'data':>5} {'fit':>5} {'chosen':>6} {'tried (+ pass)':<16} "
          f"{'pruned KiB gz':>8} {'prun pp':>7} {'pruned gate':>12} {'int8 KiB gz':>8} {'int8 pp':>7} "
          f"{'qat pp':>7} {'qat gate':>12} {'conv s':>7}")
    for pair in pairs:
        dataset, model = pair.split(":")
        with tempfile.TemporaryDirectory() as d:
            run = Path(d) / "run"
            train(TrainConfig(dataset=dataset, model=model, out=str(run), quiet=True))
            n_all = len(np.load(run / "train.npz")["x_train"])
            for size, data in (("500", str(_small_npz(run, Path(d) / "small.npz"))), ("all", str(run))):
                bundle = Path(d) / f"bundle-{size}"
                t0 = time.perf_counter()
                man = convert(ConvertConfig(model=str(run / "model.keras"), out=str(bundle), data=data,
                                            plan=plan_recipes(RECIPES), jobs=2), progress=lambda *a: None)
                seconds = time.perf_counter() - t0
                rep = parity(str(bundle))
                extra = man.artifact("tflite-int8-qat").extra if "tflite-int8-qat" in \
                    [a.name for a in man.artifacts] else {}
                n_fit = (extra.get("fine_tune") or {}).get("fit_samples", SMALL if size == "500" else n_all)
                _row(dataset, model, size, n_fit, man, rep, seconds)
                if "--json" in sys.argv:
                    print(json.dumps({a.name: a.extra for a in man.artifacts}, indent=1))


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if not a.startswith("--")] or ["digits:tiny_cnn", "mnist:resnet8"])
