"""Choosing on the device: the fastest artifact x backend x threads among those that passed their gates.

A toolkit's benchmark says little about a Raspberry Pi: int8 can be slower than float on some ARM cores, and more
interpreter threads can hurt. So after a deploy's smoke check the device measures every candidate itself:

* candidates: every artifact of the release's bundle whose parity gate passed (``manifest.json`` records each
  artifact's gate per backend; ``inconclusive`` is not a failure). A bundle on which ``edgeport parity`` never ran
  has no gate results: then every artifact is a candidate and ``gated`` is false in the result.
* each candidate runs with every installed backend for its format, at 1..``max_threads`` threads. Every
  configuration first gives the bundle's recorded check outputs (the smoke-check tolerances of
  :mod:`edgeport_runtime.smoke`: thread counts change float summation order, backends change int8 rounding),
  then is timed: batch-1 latency (p50/p90) and batch-32 throughput.
* the choice is the lowest batch-1 p50 latency (a service answers one request at a time), ties broken by
  throughput.

``selected.json`` (schema 1, written atomically into the release directory, beside ``bundle/``)::

    {schema_version: 1, created, manifest_sha256 (of bundle/manifest.json: the selection belongs to that bundle),
     artifact, backend, threads, latency_ms_p50, throughput_per_s, criterion, gated, max_threads,
     table: [{artifact, backend, threads, gate, check, latency_ms_p50, latency_ms_p90, throughput_per_s, error}],
     excluded: [{artifact, why}]}

Loading a release (``edgeport_runtime.load(RELEASE)``, ``edgeport-run predict|info|bench RELEASE``, ``serve``)
uses its selection for whatever the caller leaves unset (see :func:`apply_selection`).

Usage on a device: ``python -m edgeport_runtime.select RELEASE_DIR --max-threads N [--json]`` (exit 0 when a
configuration was selected and written, 2 when none qualifies or the release is unreadable).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import backends
from .bench import sample_input
from .errors import EdgeportError, ModelLoadError, UsageError
from .manifest import Artifact, atomic_write_text, contained_path, load_npy, read_manifest, sha256_file
from .model import load
from .schema import Fields
from .smoke import FLOAT_ATOL, INT8_STEPS

SELECTED_NAME = "selected.json"
SCHEMA_VERSION = 1
MAX_SELECTED_BYTES = 1 << 20  # a real selected.json is a few KB
BUNDLE_DIR = "bundle"  # a release keeps its bundle here (see edgeport deploy)
THROUGHPUT_BATCH = 32


class NothingSelectable(EdgeportError):
    """No artifact of the release passed its gate and the device check with an installed backend."""


@dataclass
class Selection:
    """A validated ``selected.json``: what to run, and the file it came from."""

    artifact: str
    backend: str
    threads: int
    path: Path
    data: Dict[str, Any]

    def summary(self) -> Dict[str, Any]:
        """The selection as Model.info reports it."""
        return {"file": str(self.path), "artifact": self.artifact, "backend": self.backend,
                "threads": self.threads, "latency_ms_p50": self.data.get("latency_ms_p50"),
                "throughput_per_s": self.data.get("throughput_per_s"), "created": self.data.get("created")}


def gate_of(art: Artifact) -> str:
    """``pass``, ``inconclusive``, ``FAIL`` or ``not run``: the artifact's parity gate as its manifest records it
    (over every backend the toolkit checked it with; one failure fails it, the same rule as `edgeport report`)."""
    records = [r for r in (art.parity or {}).values() if isinstance(r, dict)]
    if not records:
        return "not run"
    outcomes = {r.get("outcome") or ("pass" if r.get("passed") else "fail") for r in records}
    if "fail" in outcomes or any(r.get("passed") is False for r in records):
        return "FAIL"
    return "inconclusive" if "inconclusive" in outcomes else "pass"


def plan(bundle_dir: Path, installed: Optional[List[str]] = None
         ) -> Tuple[List[Tuple[Artifact, str, str]], List[Dict[str, str]], bool]:
    """Which (artifact, backend, gate) to measure, which artifacts are left out (and why), and whether the
    bundle has gate results at all."""
    man = read_manifest(bundle_dir)
    installed = backends.installed_backends() if installed is None else installed
    gates = {a.name: gate_of(a) for a in man.artifacts}
    gated = any(g != "not run" for g in gates.values())
    todo, excluded = [], []
    for art in man.artifacts:
        gate = gates[art.name]
        usable = [b for b in installed if backends.BACKENDS[b].runs(art.format, art.quantization)]
        if gate == "FAIL":
            excluded.append({"artifact": art.name, "why": "failed its parity gate"})
        elif gated and gate == "not run":
            excluded.append({"artifact": art.name, "why": "no parity gate result (edgeport parity did not check it)"})
        elif not art.check_outputs:
            excluded.append({"artifact": art.name, "why": "no recorded check outputs to verify it on the device"})
        elif not usable:
            excluded.append({"artifact": art.name, "why": f"no installed backend runs {art.format}"})
        else:
            todo.extend((art, b, gate) for b in usable)
    return todo, excluded, gated


def _check(y: Any, want: np.ndarray, model, backend: str) -> Optional[str]:
    """None when ``y`` matches the recorded outputs within the smoke tolerances, else why not."""
    if isinstance(y, list) or y.shape != want.shape:
        return f"outputs of shape {list(getattr(y, 'shape', []))} differ from the recorded {list(want.shape)}"
    diff = float(np.abs(y - want).max())
    out = model.outputs[0]
    if out.quantized:
        steps, tol = diff / out.scale, INT8_STEPS.get(backend, 0)
        return None if steps <= tol + 1e-6 else f"{steps:.3g} output steps from the recorded outputs (allowed {tol})"
    return None if diff <= FLOAT_ATOL else f"max |diff| {diff:.3g} from the recorded outputs (allowed {FLOAT_ATOL})"


def measure(bundle_dir: Path, art: Artifact, backend: str, threads: int, x_check: np.ndarray, runs: int = 100,
            budget_s: float = 3.0) -> Dict[str, Any]:
    """Verify one configuration against the recorded check outputs, then time it.

    Latency: batch-1 runs until ``runs`` are done or ``budget_s`` seconds have passed (at least 10 runs), so a
    slow model on a Pi Zero cannot stretch a deploy to hours. Throughput: batch 32, within a third of the budget.
    Load or run failures are recorded in the row (``error``), never raised: one bad configuration must not hide
    the others.
    """
    row: Dict[str, Any] = {"artifact": art.name, "backend": backend, "threads": threads}
    try:
        want = load_npy(contained_path(bundle_dir, art.check_outputs, f"artifact {art.name!r} check_outputs"),
                        "the recorded check outputs")
        with load(bundle_dir, backend=backend, num_threads=threads, artifact=art.name, use_selection=False) as m:
            why = _check(m.predict(x_check), want, m, backend)
            row["check"] = "pass" if why is None else f"FAIL: {why}"
            if why is not None:
                return row
            x1 = sample_input(m, 1)
            for _ in range(min(10, runs)):  # warm-up: caches, thread pools
                m.predict(x1)
            lat: List[float] = []
            end = time.perf_counter() + budget_s
            while len(lat) < runs and (len(lat) < 10 or time.perf_counter() < end):
                t0 = time.perf_counter()
                m.predict(x1)
                lat.append(time.perf_counter() - t0)
            xb = sample_input(m, THROUGHPUT_BATCH)
            m.predict(xb)
            n, t0 = 0, time.perf_counter()
            while n < max(3, runs // 10) and (n < 3 or time.perf_counter() - t0 < budget_s / 3):
                m.predict(xb)
                n += 1
            thr = n * THROUGHPUT_BATCH / (time.perf_counter() - t0)
    except EdgeportError as e:
        row["error"] = " ".join(str(e).split())[:300]
        return row
    row.update(latency_ms_p50=round(float(np.percentile(lat, 50)) * 1000, 4),
               latency_ms_p90=round(float(np.percentile(lat, 90)) * 1000, 4), runs=len(lat),
               throughput_per_s=round(thr, 1))
    return row


def select(release_dir: str, max_threads: int, runs: int = 100, budget_s: float = 3.0,
           installed: Optional[List[str]] = None, log=None) -> Dict[str, Any]:
    """Measure every candidate of ``release_dir/bundle`` at 1..``max_threads`` threads; return the selected.json
    dict (not written; see :func:`write_selection`).

    Raises:
        UsageError: ``max_threads``/``runs``/``budget_s`` out of range.
        ModelLoadError: no bundle or no check inputs in the release.
        NothingSelectable: no configuration qualifies (the message lists why each artifact was left out).
    """
    if isinstance(max_threads, bool) or not isinstance(max_threads, int) or not 1 <= max_threads <= 256:
        raise UsageError(f"max_threads must be an integer from 1 to 256 (the device's cores), got {max_threads!r}.")
    if runs < 1 or not budget_s > 0:
        raise UsageError(f"runs must be >= 1 and budget_s > 0, got {runs} and {budget_s}.")
    rel = Path(release_dir)
    bdir = rel / BUNDLE_DIR
    if not (bdir / "manifest.json").is_file():
        raise ModelLoadError(f"{rel}: no {BUNDLE_DIR}/manifest.json; expected a release directory written by "
                             "`edgeport deploy` (RELEASE/bundle/manifest.json).")
    man = read_manifest(bdir)
    if not man.check.inputs:
        raise ModelLoadError(f"{bdir}: the bundle has no check inputs to verify artifacts with; re-run "
                             "`edgeport convert`.")
    x = load_npy(contained_path(bdir, man.check.inputs, "manifest check.inputs"), "the check inputs")
    todo, excluded, gated = plan(bdir, installed)
    table = []
    for art, backend, gate in todo:
        for threads in range(1, max_threads + 1):
            row = {**measure(bdir, art, backend, threads, x, runs, budget_s), "gate": gate}
            if log:
                log(row)
            table.append(row)
    ok = [r for r in table if r.get("check") == "pass" and "latency_ms_p50" in r]
    if not ok:
        why = [f"{e['artifact']}: {e['why']}" for e in excluded] + \
              [f"{r['artifact']} [{r['backend']}, {r['threads']} threads]: {r.get('error') or r.get('check')}"
               for r in table]
        raise NothingSelectable(f"{rel}: no artifact qualifies to run on this device ({'; '.join(why) or 'none'}"
                                "). Deploy a bundle with at least one artifact that passed `edgeport parity`.")
    best = min(ok, key=lambda r: (r["latency_ms_p50"], -r["throughput_per_s"]))
    return {"schema_version": SCHEMA_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "manifest_sha256": sha256_file(bdir / "manifest.json"),
            "artifact": best["artifact"], "backend": best["backend"], "threads": best["threads"],
            "latency_ms_p50": best["latency_ms_p50"], "throughput_per_s": best["throughput_per_s"],
            "criterion": "lowest batch-1 p50 latency, then highest batch-32 throughput",
            "gated": gated, "max_threads": max_threads, "table": table, "excluded": excluded}


def write_selection(release_dir: str, sel: Dict[str, Any]) -> Path:
    """Write ``sel`` as RELEASE/selected.json (temp file + rename)."""
    path = Path(release_dir) / SELECTED_NAME
    atomic_write_text(path, json.dumps(sel, indent=2) + "\n")
    return path


def release_of(bundle_dir: Path) -> Optional[Path]:
    """The release directory holding ``bundle_dir`` as its ``bundle/``, when it has a selected.json; else None."""
    bundle_dir = Path(bundle_dir)
    if bundle_dir.name == BUNDLE_DIR and (bundle_dir.parent / SELECTED_NAME).is_file():
        return bundle_dir.parent
    return None


def read_selection(release_dir: Path) -> Selection:
    """Read and check RELEASE/selected.json: its fields, and that it was made for the bundle beside it.

    Raises:
        ModelLoadError: unreadable or malformed, or written for another bundle (the message says how to redo it
            or override it).
    """
    path = Path(release_dir) / SELECTED_NAME
    redo = (f"re-run the selection (python -m edgeport_runtime.select {release_dir} --max-threads N) or pass "
            "--artifact, --backend and --threads yourself")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SELECTED_BYTES + 1)
        if len(raw) > MAX_SELECTED_BYTES:
            raise ValueError(f"larger than {MAX_SELECTED_BYTES >> 10} KiB")
        d = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelLoadError(f"{path}: not a readable selection ({msg}); {redo}.") from None
    try:
        f = Fields(d, str(path))
        if f.int("schema_version", required=True) != SCHEMA_VERSION:
            raise ModelLoadError(f"{path}: schema_version {d.get('schema_version')!r}, this edgeport-runtime "
                                 f"reads {SCHEMA_VERSION}")
        artifact, backend = f.str("artifact", required=True), f.str("backend", required=True)
        threads = f.int("threads", required=True, minimum=1)
        sha = f.str("manifest_sha256", required=True)
    except ModelLoadError as e:
        raise ModelLoadError(f"{' '.join(str(e).split()).split('; the manifest is corrupt')[0]}; {redo}.") from None
    if backend not in backends.BACKENDS:
        raise ModelLoadError(f"{path}: unknown backend {backend!r}; {redo}.")
    manifest = Path(release_dir) / BUNDLE_DIR / "manifest.json"
    if not manifest.is_file() or sha256_file(manifest) != sha:
        raise ModelLoadError(f"{path}: made for another bundle (the sha256 of {manifest} differs from the one it "
                             f"records); {redo}.")
    return Selection(artifact, backend, threads, path, d)


def apply_selection(bundle_dir: Path, artifact: Optional[str], backend: Optional[str], threads: Optional[int]
                    ) -> Tuple[Optional[str], Optional[str], Optional[int], Optional[Selection]]:
    """Fill what the caller left unset from the release's selection (when ``bundle_dir`` is RELEASE/bundle and
    RELEASE/selected.json exists). Returns (artifact, backend, threads, selection or None).

    Explicit values always win. The selected backend is used only with the selected artifact, and the selected
    thread count only with both (the measurement was of that combination). A requested backend of another format
    than the selected artifact drops the artifact choice too (``--backend onnxruntime`` runs an ONNX artifact).
    """
    rel = release_of(bundle_dir)
    if rel is None or (artifact is not None and backend is not None and threads is not None):
        return artifact, backend, threads, None
    sel = read_selection(rel)
    if backend is not None and backend in backends.BACKENDS and artifact is None:
        man = read_manifest(bundle_dir)
        fmt = next((a.format for a in man.artifacts if a.name == sel.artifact), None)
        if fmt is not None and backends.BACKENDS[backend].format != fmt:
            return artifact, backend, threads, None
    if artifact is None or artifact == sel.artifact:
        artifact = sel.artifact
        if backend is None or backend == sel.backend:
            backend = sel.backend
            threads = sel.threads if threads is None else threads
    return artifact, backend, threads, sel


def threads_text(n: int) -> str:
    """'1 thread', '4 threads'."""
    return f"{n} thread{'' if n == 1 else 's'}"


def _print_table(sel: Dict[str, Any]) -> None:
    print(f"{'artifact':<24} {'backend':<15} {'threads':>7} {'p50 ms':>10} {'samples/s':>11}  check")
    for r in sel["table"]:
        mark = "*" if (r["artifact"], r["backend"], r["threads"]) == (sel["artifact"], sel["backend"],
                                                                     sel["threads"]) else " "
        p50 = f"{r['latency_ms_p50']:.4f}" if "latency_ms_p50" in r else "-"
        thr = f"{r['throughput_per_s']:,.0f}" if "throughput_per_s" in r else "-"
        print(f"{mark}{r['artifact']:<23} {r['backend']:<15} {r['threads']:>7} {p50:>10} {thr:>11}  "
              f"{r.get('error') or r.get('check')}")
    for e in sel["excluded"]:
        print(f" {e['artifact']:<23} left out: {e['why']}")
    print(f"selected {sel['artifact']} [{sel['backend']}, {threads_text(sel['threads'])}]: p50 "
          f"{sel['latency_ms_p50']:.4f} "
          f"ms, {sel['throughput_per_s']:,.0f} samples/s" + ("" if sel["gated"] else
                                                            " (the bundle has no parity gate results)"))


def main(argv: Optional[List[str]] = None) -> int:
    """CLI: measure, write RELEASE/selected.json, print the table (or the JSON)."""
    p = argparse.ArgumentParser(prog="python -m edgeport_runtime.select", description=__doc__.splitlines()[0])
    p.add_argument("release", help="release directory (holding bundle/), e.g. ~/edgeport/current")
    p.add_argument("--max-threads", type=int, required=True, help="measure 1..N interpreter threads (the cores)")
    p.add_argument("--runs", type=int, default=100, help="timed batch-1 runs per configuration (default 100)")
    p.add_argument("--budget-s", type=float, default=3.0,
                   help="seconds of timing per configuration at most, after 10 runs (default 3)")
    p.add_argument("--json", action="store_true", help="print selected.json instead of the table")
    args = p.parse_args(argv)
    try:
        sel = select(args.release, args.max_threads, args.runs, args.budget_s)
        write_selection(args.release, sel)
    except EdgeportError as e:
        print(f"select: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(sel, indent=2))
    else:
        _print_table(sel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
