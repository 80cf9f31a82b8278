"""CLI for the train stage: `edgeport train`, `edgeport models`, `edgeport datasets`. Thin wrappers only."""
from __future__ import annotations

import argparse
import json
from dataclasses import fields

from edgeport_runtime.errors import UsageError

from ..core.config import check_types, load_config
from ..data.datasets import DATASETS
from .trainer import CONFIG_TYPES, TrainConfig, config_keys, train
from .zoo import MODELS


def _csv_list(s: str):
    return [p.strip() for p in s.split(",") if p.strip()]


def train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport train`; each matches a TrainConfig field and a TOML key."""
    d = TrainConfig()
    a = p.add_argument
    a("--dataset", help=f"built-in name (see `edgeport datasets`) or a path to a .npz (x_train/y_train, optional "
                        f"x_test/y_test), a .csv (features + label column) or an image folder with one subfolder "
                        f"per class (default {d.dataset})")
    a("--model", help=f"zoo model (see `edgeport models`; default {d.model})")
    a("--out", help=f"run directory to create (default {d.out})")
    a("--config", help="TOML file with any of these options as keys (command-line options win)")
    a("--epochs", type=int, help=f"maximum epochs (default {d.epochs})")
    a("--batch-size", type=int, help=f"batch size (default {d.batch_size})")
    a("--optimizer", help=f"adam, adamw, sgd or rmsprop (default {d.optimizer})")
    a("--lr", type=float, help=f"learning rate (default {d.lr})")
    a("--seed", type=int, help=f"seed for splits, shuffling and weights: same seed, same weights (default {d.seed})")
    a("--threads", type=int, help="TensorFlow intra-op threads (default: all cores)")
    a("--val-split", type=float, help=f"fraction of training data for validation/early stopping "
                                      f"(default {d.val_split})")
    a("--test-split", type=float, help=f"fraction held out as the test set when the dataset has none "
                                       f"(default {d.test_split})")
    a("--patience", type=int, help=f"epochs without val-loss improvement before stopping; 0 = never "
                                   f"(default {d.patience})")
    a("--augment", type=_csv_list, help="image augmentation, comma-separated: flip,zoom,shift (default none)")
    a("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize image-folder images (default 32 32)")
    a("--channels", type=int, help="1 (grayscale) or 3 (RGB) for image folders (default 1)")
    a("--label-column", help="CSV label column (default: the last column)")
    a("--no-standardize", dest="standardize", action="store_const", const=False,
      help="keep tabular (CSV/.npz vector) features as they are; by default each feature is standardized to "
           "mean 0, std 1 with statistics of the training split, recorded for devices (TOML: standardize = false)")
    a("--width", type=float, help="mobilenet_v1 width multiplier (default 0.25)")
    a("--max-samples", type=int, help="use a stratified subset of this many samples (quick runs)")
    a("--no-cache", dest="cache", action="store_const", const=False, help="do not cache decoded datasets")
    a("--allow-gpu", action="store_const", const=True, help="keep GPUs visible (default: CPU only)")
    a("--profile", action="store_const", const=True, help="report samples/s per epoch and input-pipeline wait")
    a("--quiet", action="store_const", const=True, help="no progress display")
    a("--force", action="store_const", const=True, help="replace --out if it exists")


def _config_from_args(args):
    """TrainConfig from --config (types checked key by key) overlaid with the command-line options."""
    values = {}
    if args.config:
        values = check_types(load_config(args.config, config_keys(), section="train"), CONFIG_TYPES,
                             f"--config {args.config}")
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    try:
        return TrainConfig(**values)
    except TypeError as e:  # types were checked above; this covers anything TrainConfig itself rejects
        raise UsageError(f"--config: {e}") from None


def train_main(args) -> int:
    """Run `edgeport train` and print the headline results."""
    cfg = _config_from_args(args)
    rec = train(cfg)
    metric = (f"test accuracy {rec['test_accuracy']:.4f}" if "test_accuracy" in rec
              else f"test reconstruction MSE {rec['test_reconstruction_mse']:.5f}")
    print(f"{rec['model']} on {rec['dataset']}: {metric}; {rec['params']:,} params, {rec['macs']:,} MACs; "
          f"{rec['epochs_run']} epoch{'s' if rec['epochs_run'] != 1 else ''} (best {rec['best_epoch']}) "
          f"in {rec['fit_seconds']:.1f} s"
          f"{' [interrupted]' if rec['interrupted'] else ''}; wrote {cfg.out}/")
    if "profile" in rec:
        pr = rec["profile"]
        for e in pr["epochs"]:
            print(f"  epoch {e['epoch']:3d}: {e['samples_per_s']:9.1f} samples/s, {e['step_ms']:.2f} ms/step")
        print(f"  input pipeline alone: {pr['input_pipeline_ms_per_batch']:.2f} ms/batch; "
              f"at most {pr['input_wait_share_upper_bound']:.1%} of a step waits on input")
    return 0


def models_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport models`."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def models_main(args) -> int:
    """Print the zoo: name, reference input shape, classes, parameters, MACs (static data: no TensorFlow)."""
    rows = [{"name": m.name, "task": m.task, "input_shape": list(m.reference_shape),
             "classes": m.reference_classes, "params": m.params, "macs": m.macs, "description": m.description}
            for m in MODELS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<13} {'input':<12} {'classes':>7} {'params':>9} {'MACs':>12}  description")
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        print(f"{r['name']:<13} {shape:<12} {r['classes'] or '-':>7} {r['params']:>9,} {r['macs']:>12,}  "
              f"{r['description']}")
    print("Input shape and classes adapt to the dataset; the numbers above are for the reference input.")
    return 0


def datasets_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport datasets`."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def datasets_main(args) -> int:
    """Print the built-in datasets (no TensorFlow needed)."""
    rows = [{"name": d.name, "source": d.source, "description": d.description} for d in DATASETS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'dataset':<10} {'source':<16} description")
    for r in rows:
        print(f"{r['name']:<10} {r['source']:<16} {r['description']}")
    print("Or your own data: --dataset PATH to a .npz, a .csv or an image folder (one subfolder per class).")
    return 0
