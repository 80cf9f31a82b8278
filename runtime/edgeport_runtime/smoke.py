"""Smoke parity on a device: every runnable artifact on the bundle's check inputs vs the toolkit's outputs.

The toolkit stored each artifact's outputs on a few held-out inputs (computed on the build machine with
edgeport-runtime). A device recomputes them with its own interpreter and CPU. The tolerances are per backend, in
its row of the backend table (edgeport_runtime.backends.table): ``int8_steps`` (output quantization steps an int8
artifact may differ by: 0 for litert, onnxruntime and numpy, 4 for tflite-runtime 2.14, whose ARM kernels round
requantization differently from x86 LiteRT) and ``float_atol`` (1e-5 for float outputs).

Usage on a device: ``python -m edgeport_runtime.smoke BUNDLE [--json]`` (exit 0 all passed, 1 otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from . import backends
from .backends.table import DEFAULT_FLOAT_ATOL
from .errors import EdgeportError, ModelLoadError
from .manifest import contained_path, load_npy, read_manifest
from .model import load


class _Tolerances(Mapping):
    """backend name -> one tolerance field of its backend-table row, read at lookup time."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, name: str):
        return getattr(backends.BACKENDS[name], self._field)

    def __iter__(self):
        return iter(backends.BACKENDS)

    def __len__(self) -> int:
        return len(backends.BACKENDS)


# Views of the backend table for code that reads tolerances by backend name (the numbers live in the table)
INT8_STEPS: Mapping[str, float] = _Tolerances("int8_steps")
FLOAT_ATOLS: Mapping[str, float] = _Tolerances("float_atol")
FLOAT_ATOL = DEFAULT_FLOAT_ATOL  # every backend's float tolerance today


def smoke(bundle: str, threads: Optional[int] = None) -> Dict[str, Any]:
    """Run the check inputs through every artifact an installed backend can run; return per-artifact results.

    Raises:
        ModelLoadError / IntegrityError: no check inputs, unreadable files, or a manifest path outside the bundle
            (checked before the file is opened).
    """
    bdir = Path(bundle)
    man = read_manifest(bdir)
    if not man.check.inputs:
        raise ModelLoadError(f"{bundle}: the bundle has no check inputs; re-run `edgeport convert`.")
    x = load_npy(contained_path(bdir, man.check.inputs, "manifest check.inputs"), "the check inputs")
    rows: List[Dict[str, Any]] = []
    for art in man.artifacts:
        usable = backends.runnable_backends(art.format, art.quantization)
        if not usable or not art.check_outputs:
            rows.append({"artifact": art.name, "skipped": "no installed backend" if not usable else "no outputs"})
            continue
        with load(bdir, backend=usable[0], num_threads=threads, artifact=art.name) as m:
            if len(m.outputs) != 1 or len(m.inputs) != 1:  # several-I/O check files are packed (toolkit format)
                rows.append({"artifact": art.name, "skipped": f"{len(m.inputs)} inputs, {len(m.outputs)} outputs "
                                                              "(smoke compares one input and one output)"})
                continue
            y = m.predict(x)
            out = m.outputs[0]
        want = load_npy(contained_path(bdir, art.check_outputs, f"artifact {art.name!r} check_outputs"),
                        "the stored check outputs")
        if want.shape != y.shape:
            raise ModelLoadError(f"{bundle}: artifact {art.name!r} stored outputs of shape {list(want.shape)}, "
                                 f"the model gives {list(y.shape)}; the bundle is inconsistent.")
        diff = float(np.abs(y - want).max())
        row = {"artifact": art.name, "backend": usable[0], "max_abs_diff": diff}
        tol = backends.BACKENDS[usable[0]]
        if out.quantized:
            steps = diff / out.scale
            row.update(max_steps=round(steps, 3), tolerance_steps=tol.int8_steps,
                       passed=steps <= tol.int8_steps + 1e-6)  # 1e-6: float rounding of diff / scale
        else:
            row.update(tolerance=tol.float_atol, passed=diff <= tol.float_atol)
        rows.append(row)
    ran = [r for r in rows if "passed" in r]
    return {"bundle": str(bdir), "artifacts": rows, "passed": bool(ran) and all(r["passed"] for r in ran)}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI: print the smoke results; exit 1 if any artifact is outside its tolerance."""
    p = argparse.ArgumentParser(prog="python -m edgeport_runtime.smoke", description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        res = smoke(args.bundle, args.threads)
    except EdgeportError as e:
        print(f"smoke: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for r in res["artifacts"]:
            if "skipped" in r:
                print(f"  - {r['artifact']:<20} skipped ({r['skipped']})")
            else:
                print(f"  {'ok' if r['passed'] else 'XX'} {r['artifact']:<20} [{r['backend']}] max |diff| "
                      f"{r['max_abs_diff']:.3g}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
