"""The data side of `edgeport convert` for models trained elsewhere: --data with or without labels, --eval.

Calibration needs inputs only. Labels matter for two things: fine-tuning recipes (QAT, pruning), which are
skipped with a note when there are none, and parity's accuracy, which is measured on --eval (or the labelled
held-out split) and otherwise replaced by fidelity to the Keras model on held-back inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgeport_runtime.errors import UsageError

from ..data.run import Data, resolve_data
from ..data.unlabeled import InputOptions
from .modelshape import input_specs, sample_shape
from .multiio import load_multi_data
from .recipes import RECIPES, Recipe

TASKS = ("classification", "regression", "autoencoder")

NO_LABELS_NOTE = ("needs labels to fine-tune, and --data has none (give a labelled --data: npz with y_train, "
                  "image folder with class subfolders, CSV with a label column)")


def load_convert_data(model: Path, data: Optional[str], seed: int, inputs: Optional[InputOptions],
                      eval_path: Optional[str], task: Optional[str]) -> Data:
    """The splits convert calibrates on (and parity later re-creates), with the model's shape as defaults."""
    if task is not None and task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {task!r}.")
    specs = input_specs(model)
    if specs is not None and len(specs) > 1:
        d = load_multi_data(data, specs, seed, eval_path, task or "classification")
    else:
        d = resolve_data(model, data, seed, inputs, eval_path, model_shape=sample_shape(model))
    if task is not None:
        d.task = task
    return d


def split_fine_tuning(recipes: List[Recipe], data: Data, explicit: bool
                      ) -> Tuple[List[Recipe], Dict[str, str]]:
    """Recipes that can run on ``data`` and {recipe: why skipped} for fine-tuning ones when it has no labels.

    Raises:
        UsageError: the user named a fine-tuning recipe explicitly and there are no labels.
    """
    if data.labelled:
        return list(recipes), {}
    need = [r for r in recipes if RECIPES[r].fine_tunes]
    if need and explicit:
        raise UsageError(f"{', '.join(r.value for r in need)} {NO_LABELS_NOTE}. Leave them out of --recipes, or "
                         "give labelled data.")
    return [r for r in recipes if r not in need], {r.value: NO_LABELS_NOTE for r in need}


def data_record(data_arg: Optional[str], data: Data, seed: int, inputs: Optional[InputOptions],
                eval_path: Optional[str]) -> Dict[str, Any]:
    """What parity needs to re-create the held-out split: --data/--eval (absolute), seed, options, labels."""
    def absolute(arg):
        return str(Path(arg).resolve()) if arg is not None and Path(arg).exists() else arg

    if data.run_dir is not None:
        return {"data": str(data.run_dir.resolve()), "seed": seed, "split": "the training run's test.npz",
                "labelled": True}
    rec: Dict[str, Any] = {"data": absolute(data_arg), "seed": seed, "labelled": data.labelled,
                           "split": data.source, "accuracy_measured": data.accuracy_measurable}
    if eval_path is not None:
        rec["eval"] = absolute(eval_path)
    if inputs is not None and inputs.record():
        rec["inputs"] = inputs.record()
    return rec


def shape_hint(data_arg: Optional[str]) -> str:
    """Extra advice for a shape mismatch, by the kind of --data."""
    if data_arg and str(data_arg).lower().endswith(".csv"):
        return (" A CSV is read as features plus a label column unless the model takes exactly its column count; "
                "--no-labels reads every column as a feature, --label-column names the label.")
    if data_arg and Path(data_arg).is_dir():
        return " For image folders set --image-size HxW, --channels and --layout to what the model takes."
    return ""
