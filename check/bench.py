"""`edgeport bench`: each artifact through edgeport-runtime in a clean process, and the Keras model for reference.

Every artifact is measured by ``edgeport-run bench`` in its own subprocess (no TensorFlow in that process, as on
a device): cold start and peak RSS, latency p50/p90 at batch 1 with 1 thread and with all cores, throughput at
batch 32. The Keras model is timed calling ``model(x)`` directly (``predict`` adds ~40 ms per call, STACK.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from edgeport_runtime.manifest import atomic_write_text, contained_path, read_manifest

from ..core.tfenv import import_tf

RUNS = 300


def _run_bench(bdir: Path, artifact: str, threads: int, cold: bool, runs: int) -> Dict[str, Any]:
    args = [sys.executable, "-m", "edgeport_runtime.cli", "bench", str(bdir), "--artifact", artifact, "--threads",
            str(threads), "--runs", str(runs), "--json"] + ([] if cold else ["--no-cold-start"])
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"edgeport-run bench {artifact} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


_KERAS_COLD = """
import os, sys, time, json, resource
t0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras
m = keras.saving.load_model(sys.argv[1], compile=False)
x = np.load(sys.argv[2])[:1]
m(x)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def keras_reference(model_path: str, x: np.ndarray, runs: int = RUNS) -> Dict[str, Any]:
    """Latency of the Keras model called directly (batch 1), and a cold start in a fresh process."""
    import_tf()
    import keras

    m = keras.saving.load_model(model_path, compile=False)
    x1 = x[:1]
    for _ in range(10):
        m(x1, training=False)
    lat = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        m(x1, training=False)
        lat[i] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "x.npy", x1)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _KERAS_COLD, model_path, str(Path(d) / "x.npy")],
                             capture_output=True, text=True, check=True)
        cold = time.perf_counter() - t0
    return {"latency_ms": {"p50": float(np.percentile(lat, 50)) * 1000, "p90": float(np.percentile(lat, 90)) * 1000},
            "cold_start_s": round(cold, 3), "peak_rss_mb": round(json.loads(out.stdout.splitlines()[-1])["rss_mb"], 1)}


def bench(bundle: str, runs: int = RUNS, write: bool = True) -> Dict[str, Any]:
    """Benchmark every artifact of ``bundle`` (and the Keras source); store bench.json in the bundle."""
    bdir = Path(bundle)
    man = read_manifest(bdir)
    cores = len(os.sched_getaffinity(0))
    rows = []
    for art in man.artifacts:
        one = _run_bench(bdir, art.name, 1, True, runs)
        allc = _run_bench(bdir, art.name, cores, False, runs)
        rows.append({"name": art.name, "recipe": art.recipe, "format": art.format, "backend": one["backend"],
                     "bytes": art.bytes, "gzip_bytes": art.gzip_bytes, "load_s": one["load_s"],
                     "cold_start_s": one["cold_start_s"], "rss_mb": one["cold_start_rss_mb"],
                     "latency_ms_p50": one["latency_ms"]["p50"], "latency_ms_p90": one["latency_ms"]["p90"],
                     "latency_ms_p50_all_cores": allc["latency_ms"]["p50"],
                     "latency_ms_p90_all_cores": allc["latency_ms"]["p90"],
                     "throughput_batch32_per_s": allc["throughput_per_s"]})
    x = np.load(contained_path(bdir, man.check.inputs, "manifest check.inputs"))
    keras = None
    if Path(man.source.path or "").suffix == ".keras":  # the reference row needs a Keras 3 model file
        keras = keras_reference(man.source.path, x, runs)
    result = {"bundle": str(bdir), "cores": cores, "runs": runs, "keras": keras, "artifacts": rows}
    if write:
        atomic_write_text(bdir / "bench.json", json.dumps(result, indent=2) + "\n")
    return result
