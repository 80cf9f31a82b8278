"""CLI for the convert stage: `edgeport convert`. Thin wrappers only."""
from __future__ import annotations

import argparse
import time

from edgeport_runtime.errors import UsageError

from ..core.config import check_types, load_config
from .pipeline import ConvertConfig, convert
from .recipes import DEFAULT_RECIPES, plan_recipes

_CONVERT_KEYS = ("recipes", "calibration", "data", "seed", "jobs", "options")
# The type each [convert] key takes in a TOML file (checked before anything runs).
_CONVERT_TYPES = {"recipes": (str, ("list", str)), "calibration": int, "data": str, "seed": int, "jobs": int,
                  "options": dict}


def convert_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport convert`."""
    a = p.add_argument
    a("model", help="a Keras 3 .keras file, a legacy .h5, or a TensorFlow SavedModel directory")
    a("--out", required=True, help="bundle directory to create (model files + manifest.json)")
    a("--recipes", help=f"comma-separated recipes or 'all' (default: all that apply to the model; a named recipe "
                        f"that fails fails the run): {', '.join(DEFAULT_RECIPES)}")
    a("--calibration", type=int, help="representative samples for int8, stratified from training data "
                                      "(default 300)")
    a("--data", help="training run directory, dataset name or path for calibration/fine-tuning (default: the "
                     "run directory MODEL sits in)")
    a("--seed", type=int, help="seed for calibration sampling and fine-tuning (default 0)")
    a("--jobs", type=int, help="recipes converted in parallel, one process each (default 1)")
    a("--config", help="TOML file: keys recipes, calibration, data, seed, jobs under [convert], and per-recipe "
                       "options as [convert.options.RECIPE] tables (e.g. sparsity = 0.8)")
    a("--unsafe-load", action="store_true", help="allow the model file to run code (Lambda layers, custom "
                                                  "objects); only for files you trust")
    a("--force", action="store_true", help="replace --out if it exists")


def convert_main(args) -> int:
    """Run `edgeport convert` and print one line per artifact."""
    conf = {}
    if args.config:
        where = f"--config {args.config}"
        conf = check_types(load_config(args.config, _CONVERT_KEYS, section="convert"), _CONVERT_TYPES, where)
        check_types(conf.get("options", {}), {k: dict for k in conf.get("options", {})}, f"{where} [options]")
    for key in ("recipes", "calibration", "data", "seed", "jobs"):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    plan = plan_recipes(conf.get("recipes", "all"), conf.get("options", {}))
    jobs = int(conf.get("jobs", 1))
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}.")
    cfg = ConvertConfig(model=args.model, out=args.out, plan=plan,
                        calibration=int(conf.get("calibration", 300)), data=conf.get("data"),
                        seed=int(conf.get("seed", 0)), jobs=jobs,
                        unsafe=args.unsafe_load, force=args.force, verbose=args.verbose)
    t0 = time.perf_counter()
    n = len(plan.jobs)
    print(f"converting {args.model} -> {args.out} ({n} recipe{'' if n == 1 else 's'})", flush=True)
    man = convert(cfg)
    fp32 = next((a.bytes for a in man.artifacts if a.recipe == "tflite-fp32"), None)
    print(f"{'artifact':<20} {'bytes':>9} {'gzip':>9} {'vs fp32':>8} {'sparsity':>8}")
    for a in man.artifacts:
        rel = f"{a.bytes / fp32:.0%}" if fp32 else "-"
        sp = f"{a.sparsity:.0%}" if a.sparsity is not None else "-"
        print(f"{a.name:<20} {a.bytes:>9,} {a.gzip_bytes:>9,} {rel:>8} {sp:>8}")
    if man.skipped:
        print(f"skipped (do not apply to this model, see the warnings above): {', '.join(man.skipped)}")
    print(f"wrote {args.out}/manifest.json in {time.perf_counter() - t0:.1f} s "
          f"(calibration: {man.calibration.count} samples, {man.calibration.source})")
    return 0
