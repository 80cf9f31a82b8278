"""Measuring a model on this device: load, first inference, latency percentiles, throughput, RSS, cold start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, Optional

import numpy as np

from .errors import EdgeportError
from .manifest import contained_path, load_npy


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def sample_input(model, batch: int = 1) -> np.ndarray:
    """Inputs to time with: the bundle's check inputs when it has them, else seeded random floats."""
    shape = [batch] + [d or 1 for d in model.inputs[0].shape[1:]]
    man = model.manifest
    if man is not None and man.check.inputs and getattr(model, "directory", None):
        path = contained_path(model.directory, man.check.inputs, "manifest check.inputs")
        if path.is_file():
            x = load_npy(path, "the bundle's check inputs")
            if x.ndim == len(shape) and tuple(x.shape[1:]) == tuple(shape[1:]) and len(x):
                reps = int(np.ceil(batch / len(x)))
                return np.concatenate([x] * reps)[:batch].astype(np.float32)
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def cold_start(path: str, backend: Optional[str] = None, threads: Optional[int] = None,
               artifact: Optional[str] = None) -> Dict[str, float]:
    """Start a fresh Python process that imports edgeport_runtime, loads ``path`` and predicts once.

    Returns wall seconds from spawning the process to its exit, and the child's peak RSS.
    """
    args = [sys.executable, "-m", "edgeport_runtime.coldstart", str(path), backend or "", str(threads or 0),
            artifact or ""]
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise EdgeportError(f"the cold-start child process failed (exit {out.returncode}: {last[:200]}); "
                            "re-run with --no-cold-start to skip it.")
    child = json.loads(out.stdout.strip().splitlines()[-1])
    return {"cold_start_s": round(wall, 4), "cold_start_rss_mb": round(child["rss_mb"], 1)}


def bench(path: str, backend: Optional[str] = None, threads: Optional[int] = None, artifact: Optional[str] = None,
          runs: int = 200, batch: int = 32, with_cold_start: bool = True) -> Dict[str, Any]:
    """Benchmark ``path`` in this process (plus a cold start in a child process).

    Returns:
        load_s, first_inference_ms, latency_ms p50/p90/p99 at batch 1, throughput (samples/s) at ``batch``,
        peak_rss_mb, and cold_start_s / cold_start_rss_mb.
    """
    from .model import load

    t0 = time.perf_counter()
    model = load(path, backend=backend, num_threads=threads, artifact=artifact)
    load_s = time.perf_counter() - t0
    x1 = sample_input(model, 1)
    t0 = time.perf_counter()
    model.predict(x1)
    first = time.perf_counter() - t0
    for _ in range(min(20, runs)):  # warm-up: caches, thread pools
        model.predict(x1)
    lat = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        model.predict(x1)
        lat[i] = time.perf_counter() - t0
    xb = sample_input(model, batch)
    model.predict(xb)
    n_b = max(5, runs // 10)
    t0 = time.perf_counter()
    for _ in range(n_b):
        model.predict(xb)
    thr = n_b * batch / (time.perf_counter() - t0)
    res = {"artifact": model.artifact.name if model.artifact else os.path.basename(model.path),
           "backend": model.info["backend"], "threads": model.num_threads,
           "load_s": round(load_s, 4), "first_inference_ms": round(first * 1000, 3),
           "latency_ms": {p: round(float(np.percentile(lat, q)) * 1000, 4) for p, q in
                          (("p50", 50), ("p90", 90), ("p99", 99))},
           "throughput_batch": batch, "throughput_per_s": round(thr, 1), "runs": runs,
           "peak_rss_mb": round(peak_rss_mb(), 1)}
    model.close()
    if with_cold_start:
        res.update(cold_start(path, backend, threads, artifact))
    return res
