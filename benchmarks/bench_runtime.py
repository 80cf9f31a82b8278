"""Runtime numbers for the README: cold start and RSS vs TensorFlow, predict overhead, int8 bit-exactness.

Usage: .venv/bin/python benchmarks/bench_runtime.py BUNDLE_DIR   (default: runs/digits-tiny_cnn/bundle)
Prints one line per measurement; every number comes from this run on this machine.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import edgeport_runtime as er
from edgeport_runtime.bench import cold_start

from edgeport.data.run import load_run_data

REPEATS = 5  # cold starts per path; the median is reported

TF_COLD = """
import os, sys, time, json, resource
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
it = tf.lite.Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _timed(args):
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"]


def cold_starts(bundle: Path):
    art = er.read_manifest(bundle).artifact("tflite-int8")
    rt = [cold_start(str(bundle), artifact="tflite-int8") for _ in range(REPEATS)]
    tf_runs = [_timed([sys.executable, "-c", TF_COLD, str(bundle / art.path)]) for _ in range(REPEATS)]
    rt_s = float(np.median([r["cold_start_s"] for r in rt]))
    rt_mb = float(np.median([r["cold_start_rss_mb"] for r in rt]))
    tf_s = float(np.median([t for t, _ in tf_runs]))
    tf_mb = float(np.median([m for _, m in tf_runs]))
    print(f"cold start (process start, import, load, first result), median of {REPEATS}:")
    print(f"  edgeport-runtime  {rt_s * 1000:7.0f} ms  peak RSS {rt_mb:6.1f} MiB")
    print(f"  tf.lite (TF 2.21) {tf_s * 1000:7.0f} ms  peak RSS {tf_mb:6.1f} MiB")
    print(f"  ratio: {tf_s / rt_s:.1f}x faster, {tf_mb / rt_mb:.1f}x less memory")


def overhead(bundle: Path, runs: int = 20000):
    """predict() at batch 1 vs the bare interpreter: set_tensor(int8) + invoke + get_tensor."""
    from ai_edge_litert.interpreter import Interpreter

    art = er.read_manifest(bundle).artifact("tflite-int8")
    x = np.load(bundle / "check_inputs.npy")[:1].astype(np.float32)
    m = er.load(bundle, artifact="tflite-int8", num_threads=1)
    it = Interpreter(model_path=str(bundle / art.path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    q = er.quantize(x, art.inputs[0].scale, art.inputs[0].zero_point)

    def bare():
        it.set_tensor(inp["index"], q)
        it.invoke()
        return it.get_tensor(out["index"])

    def by_hand():  # what a user writes without edgeport: quantize, invoke, dequantize, no checks
        it.set_tensor(inp["index"], er.quantize(x, art.inputs[0].scale, art.inputs[0].zero_point))
        it.invoke()
        return er.dequantize(it.get_tensor(out["index"]), art.outputs[0].scale, art.outputs[0].zero_point)

    def ours():
        return m.predict(x)

    res = {}
    for name, fn in (("bare", bare), ("by_hand", by_hand), ("predict", ours)) * 2:  # interleaved, best kept
        for _ in range(500):
            fn()
        t = np.empty(runs)
        for i in range(runs):
            t0 = time.perf_counter()
            fn()
            t[i] = time.perf_counter() - t0
        res[name] = min(res.get(name, 1e9), float(np.median(t)))
    print(f"batch-1 latency, median of {runs} (int8 artifact, 1 thread):")
    print(f"  bare interpreter (set_tensor int8, invoke, get_tensor)   {res['bare'] * 1e6:6.2f} us")
    print(f"  by hand (numpy quantize + invoke + dequantize)            {res['by_hand'] * 1e6:6.2f} us")
    print(f"  Model.predict (float in/out, shape/NaN checks, lock)      {res['predict'] * 1e6:6.2f} us")
    print(f"  predict overhead: {res['predict'] / res['bare'] - 1:+.0%} vs bare invoke, "
          f"{res['predict'] / res['by_hand'] - 1:+.0%} vs the same float path by hand")


def bit_exact(bundle: Path):
    """Runtime int8 outputs vs the toolkit's own LiteRT run of the same artifact, over the whole test split."""
    from ai_edge_litert.interpreter import Interpreter

    man = er.read_manifest(bundle)
    art = man.artifact("tflite-int8")
    x = load_run_data(Path(man.source.run_dir)).x_test.astype(np.float32)
    it = Interpreter(model_path=str(bundle / art.path), num_threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, zp = inp["quantization"]
    q = np.clip(np.rint(x * (np.float32(1) / np.float32(s))) + zp, -128, 127).astype(np.int8)
    it.resize_tensor_input(inp["index"], q.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], q)
    it.invoke()
    raw = it.get_tensor(out["index"])
    mine = er.load(bundle, artifact="tflite-int8").predict_raw(q)
    same = np.array_equal(raw, mine)
    print(f"int8 outputs, runtime vs toolkit LiteRT run, {len(x)} test samples: "
          f"{'bit-identical' if same else 'DIFFERENT'}")
    return same


if __name__ == "__main__":
    b = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/digits-tiny_cnn/bundle")
    if not (b / "manifest.json").is_file():
        sys.exit(f"{b}: no bundle; run `make` first (or pass a bundle directory)")
    cold_starts(b)
    overhead(b)
    sys.exit(0 if bit_exact(b) else 1)
