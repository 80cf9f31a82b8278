"""CLI for the convert stage: `edgeport convert`. Thin wrappers only."""
from __future__ import annotations

import argparse
import time

from edgeport_runtime.errors import UsageError

from ..core.config import check_types, load_config
from .pipeline import ConvertConfig, convert
from .recipes import DEFAULT_RECIPES, plan_recipes

_CONVERT_KEYS = ("recipes", "calibration", "data", "seed", "jobs", "options", "eval", "input_scale",
                 "input_offset", "image_size", "channels", "layout", "no_labels", "task", "label_column", "label_output")
# The type each [convert] key takes in a TOML file (checked before anything runs).
_CONVERT_TYPES = {"recipes": (str, ("list", str)), "calibration": int, "data": str, "seed": int, "jobs": int,
                  "options": dict, "eval": str, "input_scale": float, "input_offset": float,
                  "image_size": (str, ("list", int)), "channels": int, "layout": str, "no_labels": bool,
                  "task": str, "label_column": str, "label_output": str}
# Options that only describe the data: given on the command line they override the TOML file.
_DATA_KEYS = ("eval", "input_scale", "input_offset", "image_size", "channels", "layout", "task", "label_column",
              "label_output")


def convert_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport convert`."""
    a = p.add_argument
    a("model", help="a Keras 3 .keras file, a legacy .h5, or a TensorFlow SavedModel directory")
    a("--out", required=True, help="bundle directory to create (model files + manifest.json)")
    a("--recipes", help=f"comma-separated recipes or 'all' (default: all that apply to the model; a named recipe "
                        f"that fails fails the run): {', '.join(DEFAULT_RECIPES)}")
    a("--calibration", type=int, help="representative samples for int8, drawn at random (seeded) from the "
                                      "training data, stratified by class when labelled (default 300)")
    a("--data", help="training run directory, dataset name or path for calibration/fine-tuning (default: the "
                     "run directory MODEL sits in)")
    a("--eval", help="labelled samples parity measures accuracy on (npz x_test/y_test, image folder with class "
                     "subfolders, CSV with labels); without it and without labels in --data, parity measures "
                     "fidelity to the Keras model on held-back --data samples")
    a("--no-labels", action="store_true", default=None,
      help="ignore labels in --data (every CSV column is an input, image subfolders are not classes)")
    a("--input-scale", type=float, help="raw --data values are multiplied by this (default 1/255 for images, 1 "
                                        "otherwise); recorded in the manifest for devices")
    a("--input-offset", type=float, help="added after --input-scale (e.g. -1 with scale 1/127.5 for [-1, 1])")
    a("--image-size", help="HxW image folders are resized to (default: the model's input size)")
    a("--channels", type=int, help="1 (grayscale) or 3 (RGB) for image folders (default: the model's)")
    a("--layout", help="NHWC (default) or NCHW: how image samples are laid out for the model")
    a("--task", help="classification, regression or autoencoder: how parity compares outputs (default: the "
                     "training run's, else classification)")
    a("--label-column", help="the CSV column holding labels (default: the last one, if it holds classes)")
    a("--label-output", help="models with several outputs: the output the labels belong to (accuracy is measured "
                             "on it, fidelity on the others; default: the first)")
    a("--seed", type=int, help="seed for calibration sampling and fine-tuning (default 0)")
    a("--jobs", type=int, help="recipes converted in parallel, one process each (default 1)")
    a("--config", help="TOML file: under [convert] the long options as keys (recipes, calibration, data, eval, "
                       "input_scale, image_size, no_labels, ...), and per-recipe options as "
                       "[convert.options.RECIPE] tables (e.g. sparsity = 0.8)")
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
    for key in _DATA_KEYS + ("no_labels",):
        if getattr(args, key, None) is not None:
            conf[key] = getattr(args, key)
    cfg = ConvertConfig(model=args.model, out=args.out, plan=plan,
                        calibration=int(conf.get("calibration", 300)), data=conf.get("data"),
                        seed=int(conf.get("seed", 0)), jobs=jobs,
                        unsafe=args.unsafe_load, force=args.force, verbose=args.verbose,
                        eval=conf.get("eval"), inputs=_input_options(conf), task=conf.get("task"),
                        label_output=conf.get("label_output"))
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


def _input_options(conf):
    """The preprocessing options of raw --data files from the merged TOML/command-line settings."""
    from ..data.unlabeled import InputOptions, parse_image_size

    size = conf.get("image_size")
    if isinstance(size, list):
        size = "x".join(str(v) for v in size)
    scale, offset = conf.get("input_scale"), conf.get("input_offset")
    return InputOptions(input_scale=None if scale is None else float(scale),
                        input_offset=None if offset is None else float(offset),
                        image_size=parse_image_size(size) if size is not None else None,
                        channels=conf.get("channels"), layout=conf.get("layout"),
                        label_column=conf.get("label_column"),
                        labels="none" if conf.get("no_labels") else "auto").check()
