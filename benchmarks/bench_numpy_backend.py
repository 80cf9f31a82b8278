"""Latency of edgeport-runtime's numpy backend vs ai-edge-litert (1 thread each) on zoo models, int8 and fp32.

Usage: .venv/bin/python benchmarks/bench_numpy_backend.py [MODEL_DIR]
Converts tiny_cnn, ds_cnn, resnet8 and mobilenet_v1 (reference input shapes, untrained weights: latency does not
depend on the weight values) with the real TFLite converter into MODEL_DIR (default: a temp dir; files already
there are reused), then prints a markdown table of median latency per call at batch 1 and batch 32.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one BLAS thread, like litert's 1
    os.environ.setdefault(_v, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edgeport_runtime.backends.numpy_backend import NumpySession  # noqa: E402

MODELS = ["tiny_cnn", "ds_cnn", "resnet8", "mobilenet_v1"]
RECIPES = ["tflite-int8", "tflite-fp32"]
BATCHES = [1, 32]
BUDGET_S = 2.0  # time per measurement; at least 5 calls


def convert_all(out: Path):
    from edgeport.core import tfenv

    tfenv.import_tf()
    import keras

    from edgeport.convert import exporters
    from edgeport.convert.recipes import RECIPES as TABLE, Recipe
    from edgeport.convert.source import Source
    from edgeport.convert.worker import Job
    from edgeport.train.zoo import MODELS as ZOO, build_model

    for name in MODELS:
        row = ZOO[name]
        todo = [r for r in RECIPES if not (out / f"{name}-{r}.tflite").exists()]
        if not todo:
            continue
        keras.utils.set_random_seed(0)
        model = build_model(name, row.reference_shape, row.reference_classes)
        x = np.random.default_rng(0).uniform(0, 1, (64, *row.reference_shape)).astype(np.float32)
        src = Source(Path(name), "keras", model, row.reference_shape, tuple(model.outputs[0].shape[1:]))
        job = Job(src, x, None, None, None, None, "classification", 0)
        for r in todo:
            spec = TABLE[Recipe(r)]
            exporters.export_tflite(job, spec, dict(spec.options), out / f"{name}-{r}.tflite")


def _median_call(fn) -> float:
    fn()  # warm-up
    times, t_end = [], time.perf_counter() + BUDGET_S
    while len(times) < 5 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(path: Path, batch: int):
    s = NumpySession(str(path))
    spec = s.inputs[0]
    x = np.random.default_rng(0).uniform(0, 1, (batch, *spec.shape[1:])).astype(np.float32)
    if spec.dtype == "int8":
        x = np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
    it = Interpreter(model_path=str(path), num_threads=1)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    out = it.get_output_details()[0]["index"]

    def litert():
        it.set_tensor(d["index"], x)
        it.invoke()
        return it.get_tensor(out)

    same = np.array_equal(s.run([x])[0], litert()) if spec.dtype == "int8" else \
        float(np.abs(s.run([x])[0] - litert()).max()) <= 1e-5
    return _median_call(lambda: s.run([x])), _median_call(litert), same


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bench-numpy-"))
    out.mkdir(parents=True, exist_ok=True)
    convert_all(out)
    print("| model | recipe | batch | numpy ms/call | litert ms/call | ratio | numpy == litert |")
    print("|---|---|---|---|---|---|---|")
    for name in MODELS:
        for r in RECIPES:
            for b in BATCHES:
                t_np, t_lr, same = measure(out / f"{name}-{r}.tflite", b)
                print(f"| {name} | {r} | {b} | {t_np * 1e3:.2f} | {t_lr * 1e3:.3f} | {t_np / t_lr:.0f}x | "
                      f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
