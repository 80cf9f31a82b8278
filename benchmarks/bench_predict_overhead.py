"""Model.predict overhead vs a bare LiteRT invoke: int8 artifacts, batch 1, one thread, per zoo model.

Usage: .venv/bin/python benchmarks/bench_predict_overhead.py [MODEL_DIR] [--budget SECONDS]
Builds every zoo model untrained at its reference input shape (latency does not depend on the weight values),
converts it to int8 with the real TFLite converter (the exporter path `edgeport convert` uses) into MODEL_DIR
(default: a temp dir; files already there are reused), then prints a markdown table per model:
- bare invoke: set_tensor (an already-quantized int8 input) + invoke + get_tensor on the Model's own interpreter;
- predict: ``Model.predict`` on the float32 input (quantize, checks, invoke, dequantize);
- predict_pixels: ``Model.predict_pixels`` on uint8 pixels with the zoo's image preprocessing (x / 255), for the
  models whose input is an image (scaling and quantization by table, or one integer addition);
each the median (p50) of single-call times, the calls interleaved so machine load hits all alike, and the ratio.
Times are CPU time of the calling thread (time.thread_time_ns; LiteRT with one thread runs on it): wall-clock
times on a shared machine also count the time other processes hold the core. --wall uses wall-clock time.
The last column says whether predict's outputs equal the dequantized bare-invoke outputs bit for bit.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeport_runtime as er

IMAGE_MODELS = {"tiny_cnn", "resnet8", "mobilenet_v1"}  # inputs that are pictures (uint8 pixels make sense)


def convert_all(out: Path, names):
    """int8 .tflite of each zoo model (reference shape, untrained, seeded) through the exporter `convert` uses."""
    todo = [n for n in names if not (out / f"{n}-tflite-int8.tflite").exists()]
    if not todo:
        return
    from edgeport.core import tfenv

    tfenv.import_tf()
    import keras

    from edgeport.convert import exporters
    from edgeport.convert.recipes import RECIPES, Recipe
    from edgeport.convert.source import Source
    from edgeport.convert.worker import Job
    from edgeport.train.zoo import MODELS as ZOO, build_model

    spec = RECIPES[Recipe.TFLITE_INT8]
    for name in todo:
        row = ZOO[name]
        classes = row.reference_classes or 0
        keras.utils.set_random_seed(0)
        model = build_model(name, row.reference_shape, classes)
        x = np.random.default_rng(0).uniform(0, 1, (64, *row.reference_shape)).astype(np.float32)
        src = Source(Path(name), "keras", model, row.reference_shape, tuple(model.outputs[0].shape[1:]))
        job = Job(src, x, None, None, None, None, row.task, 0)
        exporters.export_tflite(job, spec, dict(spec.options), out / f"{name}-tflite-int8.tflite")


def interleaved_p50(fns, budget_s: float, clock=time.thread_time_ns):
    """Median single-call time (s) of each function, calling them in turn until the budget is spent (>= 200 each)."""
    for fn in fns:
        for _ in range(20):  # warm-up: first calls allocate
            fn()
    times = [[] for _ in fns]
    t_end = time.perf_counter() + budget_s
    while len(times[0]) < 200 or time.perf_counter() < t_end:
        for fn, t in zip(fns, times):
            t0 = clock()
            fn()
            t.append(clock() - t0)
    return [statistics.median(t) / 1e9 for t in times]


def measure(path: Path, image: bool, budget_s: float, clock):
    m = er.load(path, num_threads=1)
    m = er.Model(m._session, None, er.Manifest([], preprocessing={"input_scale": 1 / 255}), m.path, 1)
    spec, ospec = m.inputs[0], m.outputs[0]
    shape = tuple(spec.shape[1:])
    pixels = np.random.default_rng(0).integers(0, 256, (1, *shape), dtype=np.uint8)
    # model inputs in [0, 1) as the zoo's image models take them (calibrated on those); raw pixels for predict_pixels
    x = np.random.default_rng(1).uniform(0, 1, (1, *shape)).astype(np.float32)
    q = er.quantize(x, spec.scale, spec.zero_point, spec.dtype)
    it = m._session.interpreter
    i_idx, o_idx = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def bare():
        it.set_tensor(i_idx, q)
        it.invoke()
        return it.get_tensor(o_idx)

    same = np.array_equal(m.predict(x), er.dequantize(bare(), ospec.scale, ospec.zero_point))
    image = image and hasattr(m, "predict_pixels")  # absent before edgeport-runtime had it (for a baseline run)
    if image:
        ref = m.predict(pixels.astype(np.float32) * np.float32(1 / 255))
        same = same and np.array_equal(m.predict_pixels(pixels), ref)
    fns = [bare, lambda: m.predict(x)] + ([lambda: m.predict_pixels(pixels)] if image else [])
    return interleaved_p50(fns, budget_s, clock), same


def main():
    from edgeport.train.zoo import MODELS as ZOO

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", nargs="?")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timing per model")
    p.add_argument("--models", default=",".join(ZOO))
    p.add_argument("--wall", action="store_true", help="wall-clock time instead of thread CPU time")
    args = p.parse_args()
    out = Path(args.model_dir or tempfile.mkdtemp(prefix="bench-predict-"))
    out.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",")
    convert_all(out, names)
    clock = time.perf_counter_ns if args.wall else time.thread_time_ns
    print("| model | input | bare invoke p50 us | predict p50 us | predict / bare | predict_pixels p50 us | "
          "pixels / bare | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        image = name in IMAGE_MODELS
        ts, same = measure(out / f"{name}-tflite-int8.tflite", image, args.budget, clock)
        u8 = f"{ts[2] * 1e6:.1f} | {ts[2] / ts[0]:.2f}" if len(ts) > 2 else "- | -"
        shape = "x".join(str(d) for d in ZOO[name].reference_shape)
        print(f"| {name} | {shape} | {ts[0] * 1e6:.1f} | {ts[1] * 1e6:.1f} | {ts[1] / ts[0]:.2f} | {u8} | "
              f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
