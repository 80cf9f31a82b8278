"""Smoke parity on a device: every runnable artifact on the bundle's check inputs vs the toolkit's outputs.

The toolkit stored each artifact's outputs on a few held-out inputs (computed on the build machine with
edgeport-runtime). A device recomputes them with its own interpreter and CPU. Tolerances, per backend:
- ai-edge-litert and onnxruntime: int8 outputs bit-identical across x86 and ARM (integer kernels; observed on
  emulated cortex-a53/a72/a76), float outputs within 1e-5 (observed <= 5e-6: other SIMD summation orders).
- tflite-runtime 2.14: int8 outputs within 4 output steps (its ARM kernels round requantization differently
  from x86 LiteRT; a few units were observed on larger models), float within 1e-5.
- numpy (the pure-numpy TFLite backend): int8 bit-identical to LiteRT (it reproduces LiteRT's rounding op by op;
  tested against LiteRT on every zoo model), float within 1e-5.

Usage on a device: ``python -m edgeport_runtime.smoke BUNDLE [--json]`` (exit 0 all passed, 1 otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from . import backends
from .errors import EdgeportError, ModelLoadError
from .manifest import contained_path, load_npy, read_manifest
from .model import load

INT8_STEPS = {"litert": 0, "onnxruntime": 0, "tflite-runtime": 4, "numpy": 0}
FLOAT_ATOL = 1e-5


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
    installed = backends.installed_backends()
    rows: List[Dict[str, Any]] = []
    for art in man.artifacts:
        usable = [b for b in installed if backends.BACKENDS[b].format == art.format]
        if not usable or not art.check_outputs:
            rows.append({"artifact": art.name, "skipped": "no installed backend" if not usable else "no outputs"})
            continue
        with load(bdir, backend=usable[0], num_threads=threads, artifact=art.name) as m:
            if len(m.outputs) != 1:
                rows.append({"artifact": art.name, "skipped": f"{len(m.outputs)} outputs (smoke compares one)"})
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
        if out.quantized:
            steps = diff / out.scale
            row.update(max_steps=round(steps, 3), tolerance_steps=INT8_STEPS[usable[0]],
                       passed=steps <= INT8_STEPS[usable[0]] + 1e-6)
        else:
            row.update(tolerance=FLOAT_ATOL, passed=diff <= FLOAT_ATOL)
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
