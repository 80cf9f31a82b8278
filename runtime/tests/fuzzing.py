"""A seeded fuzzer for edgeport-runtime: mutated models, manifests and archives must fail cleanly.

Every case is generated from (seed, index) alone, so a failure is reproduced by its index. Cases run in worker
subprocesses (a segfault kills the worker, not the fuzzer, and is counted as a crash); each case gets a fresh
working directory and TMPDIR inside a watched directory. A case passes when loading/predicting either works or
raises one of the runtime's documented error classes with a one-line message, and afterwards nothing new exists
in the watched directory (no leaked temp dirs, nothing extracted outside).

    python tests/fuzzing.py --cases 5000 --seed 1      # from runtime/, in .venv-runtime (`make fuzz`)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional

from fuzz_mutations import FIXTURE, make_archive, mutate_bytes, mutate_manifest
MODELS = ("tflite-int8.tflite", "tflite-fp32.tflite", "onnx-fp32.onnx")
DOCUMENTED = {"UsageError", "InputError", "ModelLoadError", "ModelRunError", "IntegrityError",
              "BackendUnavailableError"}
# one case loads at most 3 tiny models; 30 s means it hangs, even on 2 busy cores
CASE_TIMEOUT_S = float(os.environ.get("EDGEPORT_FUZZ_TIMEOUT", "30"))

# The mix of a run: (kind, share). Models dominate: they reach the most C++ code.
MIX = (("tflite", 0.385), ("onnx", 0.385), ("manifest", 0.15), ("archive", 0.08))


def kind_of(i: int, n: int) -> str:
    """Deterministic kind of case ``i`` of ``n``: the shares of :data:`MIX`, interleaved."""
    r = random.Random(i * 7919 + 17).random()
    acc = 0.0
    for kind, share in MIX:
        acc += share
        if r < acc:
            return kind
    return MIX[-1][0]


# ---------------------------------------------------------------- the worker side

def _make_case(i: int, n: int, seed: int, case_dir: Path, watched: Path):
    """Write case ``i``'s files into ``case_dir``; return (kind, path to load, run smoke too)."""
    rng = random.Random(seed * 1_000_003 + i)
    kind = kind_of(i, n)
    if kind in ("tflite", "onnx"):
        names = [m for m in MODELS if m.endswith(kind)]
        src = (FIXTURE / rng.choice(names)).read_bytes()
        donor = (FIXTURE / rng.choice(MODELS)).read_bytes()
        out = case_dir / f"m.{kind}"
        out.write_bytes(mutate_bytes(src, rng, donor))
        return kind, out, False
    if kind == "manifest":
        bdir = case_dir / "bundle"
        shutil.copytree(FIXTURE, bdir)
        (case_dir / "outside.tflite").write_bytes((FIXTURE / MODELS[0]).read_bytes())
        os.symlink(str(case_dir), str(bdir / "link-out"))  # a symlink leading out of the bundle
        d = json.loads((FIXTURE / "manifest.json").read_text())
        (bdir / "manifest.json").write_text(mutate_manifest(d, rng), encoding="utf-8", errors="surrogatepass")
        return kind, bdir, True
    return kind, make_archive(case_dir, rng, watched), False


def _selftest(i: int, base: Path) -> None:
    """EDGEPORT_FUZZ_SELFTEST=1: cases that must be reported as failures (proves the harness can fail)."""
    import edgeport_runtime as er

    if i == 0:
        os.abort()  # a crash in C
    if i == 1:
        (base / "w" / "leaked.txt").write_text("x")  # a write outside the case's directory
    if i == 2:
        raise ValueError("undocumented")
    if i == 3:
        raise er.ModelLoadError("two\nlines")
    if i == 4:
        time.sleep(CASE_TIMEOUT_S * 2)  # a hang


def _exercise(path: Path, smoke: bool) -> None:
    import numpy as np

    import edgeport_runtime as er
    from edgeport_runtime.smoke import smoke as run_smoke

    with er.load(path, num_threads=1) as m:
        _ = m.info
        shape = [1 if d is None else d for d in m.inputs[0].shape]
        if len(m.inputs) == 1 and int(np.prod(shape)) <= 1_000_000:  # a crafted shape must not eat the RAM
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            if m.inputs[0].dtype in ("float32", "int8", "uint8", "int16") or m.inputs[0].quantized:
                m.predict(x)
    if smoke:
        run_smoke(str(path), threads=1)


def _one(i: int, n: int, seed: int, base: Path) -> Dict[str, Any]:
    import edgeport_runtime as er

    case_dir = Path(tempfile.mkdtemp(prefix=f"case{i}-", dir=base / "cases"))
    res: Dict[str, Any] = {"i": i}
    try:
        kind, path, smoke = _make_case(i, n, seed, case_dir, base / "w")
        res["kind"] = kind
        try:
            if os.environ.get("EDGEPORT_FUZZ_SELFTEST"):
                _selftest(i, base)
            _exercise(path, smoke)
            res["outcome"] = "ok"
        except er.EdgeportError as e:
            name = type(e).__name__
            one_line = "\n" not in str(e) and len(str(e)) < 4000  # one line, not a dump
            res["outcome"] = name if name in DOCUMENTED and one_line else f"FAIL:{name}:multi-line"
            res["message"] = str(e)[:300]
        except Exception as e:  # noqa: BLE001 - the point: anything undocumented is a failure
            res["outcome"] = f"FAIL:{type(e).__name__}"
            res["message"] = " ".join(str(e).split())[:300]
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)
    import gc

    gc.collect()  # a leaked Model's weakref.finalize must have removed its extracted archive by now
    left = sorted(_snapshot(base) - _BASELINE)
    if left:
        res["outcome"] = "FAIL:wrote-outside"
        res["message"] = ", ".join(left[:5])
        for p in left:  # clean up so the next case is judged on its own
            shutil.rmtree(base / p, ignore_errors=True) if (base / p).is_dir() else (base / p).unlink(missing_ok=True)
    return res


_BASELINE: set = set()


def _snapshot(base: Path) -> set:
    """Every path under ``base`` except the case files themselves."""
    return {str(p.relative_to(base)) for p in base.rglob("*") if not str(p.relative_to(base)).startswith("cases")}


def worker_main(seed: int, n: int, base: str) -> None:
    """Read case indices from stdin, print one JSON result line per case."""
    import logging

    import edgeport_runtime  # noqa: F401
    from edgeport_runtime import backends

    logging.disable(logging.CRITICAL)
    b = Path(base)
    os.chdir(b / "w" / "cwd")
    for name in backends.installed_backends():  # importing onnxruntime writes TMPDIR/.ses: the baseline has it
        __import__(backends.BACKENDS[name].module)
    _BASELINE.update(_snapshot(b))
    for line in sys.stdin:
        res = _one(int(line), n, seed, b)
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------- the driver

class _Worker:
    def __init__(self, seed: int, n: int, base: Path):
        env = dict(os.environ, TMPDIR=str(base / "w" / "tmp"), PYTHONFAULTHANDLER="")
        env.pop("PYTHONFAULTHANDLER")
        self.p = subprocess.Popen([sys.executable, __file__, "--worker", str(seed), str(n), str(base)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=str(base / "w" / "cwd"))

    def stop(self) -> None:
        try:
            self.p.kill()
        except OSError:
            pass
        self.p.wait()


def run(cases: int, seed: int = 1, workers: int = 2, progress: bool = False) -> Dict[str, Any]:
    """Run ``cases`` cases; return counts by kind and outcome, the failures, and the wall time."""
    import selectors

    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="edgeport-fuzz-"))
    bases = []
    for k in range(workers):
        b = root / f"w{k}"
        for d in ("cases", "w/tmp", "w/cwd"):
            (b / d).mkdir(parents=True)
        bases.append(b)
    todo = list(range(cases))[::-1]
    results: List[Dict[str, Any]] = []
    pool = [_Worker(seed, cases, b) for b in bases]
    current: List[Optional[tuple]] = [None] * workers
    sel = selectors.DefaultSelector()

    def feed(k: int) -> None:
        if todo:
            i = todo.pop()
            current[k] = (i, time.time())
            pool[k].p.stdin.write(f"{i}\n")
            pool[k].p.stdin.flush()
        else:
            current[k] = None

    for k in range(workers):
        sel.register(pool[k].p.stdout, selectors.EVENT_READ, k)
        feed(k)
    try:
        while any(c is not None for c in current):
            for key, _ in sel.select(timeout=1.0):
                k = key.data
                line = pool[k].p.stdout.readline()
                if line:
                    results.append(json.loads(line))
                    feed(k)
                    continue
                # the worker died mid-case: a crash in C (segfault/abort) or the OOM killer
                i = current[k][0]
                rc = pool[k].p.wait()
                results.append({"i": i, "kind": kind_of(i, cases), "outcome": f"FAIL:crash(rc={rc})",
                                "message": pool[k].p.stderr.read()[-300:]})
                sel.unregister(pool[k].p.stdout)
                pool[k] = _Worker(seed, cases, bases[k])
                sel.register(pool[k].p.stdout, selectors.EVENT_READ, k)
                feed(k)
            for k, c in enumerate(current):
                if c is not None and time.time() - c[1] > CASE_TIMEOUT_S:
                    results.append({"i": c[0], "kind": kind_of(c[0], cases), "outcome": "FAIL:hang"})
                    sel.unregister(pool[k].p.stdout)
                    pool[k].stop()
                    pool[k] = _Worker(seed, cases, bases[k])
                    sel.register(pool[k].p.stdout, selectors.EVENT_READ, k)
                    feed(k)
            if progress and len(results) % 500 == 0 and results:
                print(f"  {len(results)}/{cases} cases, {time.time() - t0:.0f} s", file=sys.stderr)
    finally:
        for w in pool:
            w.stop()
        shutil.rmtree(root, ignore_errors=True)
    by_kind: Dict[str, Counter] = {}
    for r in results:
        by_kind.setdefault(r["kind"], Counter())[r["outcome"]] += 1
    failures = [r for r in results if r["outcome"].startswith("FAIL")]
    return {"cases": len(results), "seed": seed, "seconds": round(time.time() - t0, 1),
            "outcomes": dict(Counter(r["outcome"] for r in results)),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}, "failures": failures}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI of `make fuzz`: print the numbers; exit 1 when any case failed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = run(args.cases, args.seed, args.workers, progress=True)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"fuzz: {r['cases']} cases (seed {r['seed']}) in {r['seconds']} s, {len(r['failures'])} failures")
        for kind, counts in r["by_kind"].items():
            print(f"  {kind:<9} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda x: -x[1])))
        for f in r["failures"][:20]:
            print(f"  FAILED case {f['i']} ({f['kind']}): {f['outcome']} {f.get('message', '')[:200]}")
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
