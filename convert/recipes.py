"""The recipe table: one row per export recipe, with its format, options and parity gate.

Dispatch everywhere (convert, parity, bench, report, bundle) is by lookup in :data:`RECIPES`; the function that
exports each recipe is :data:`edgeport.convert.exporters.EXPORTERS`, keyed by the same :class:`Recipe`. What
`edgeport convert` is asked to do is a :class:`RecipePlan` of :class:`RecipeJob` s, built once by
:func:`plan_recipes` from the command line / config and handed unchanged to the child processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from edgeport_runtime.errors import UsageError, unknown_name
from edgeport_runtime.kinds import Format, Quantization


class Recipe(str, Enum):
    """Export recipe names (the values are what users type)."""

    TFLITE_FP32 = "tflite-fp32"
    TFLITE_FP16 = "tflite-fp16"
    TFLITE_DYNAMIC = "tflite-dynamic"
    TFLITE_INT8 = "tflite-int8"
    TFLITE_INT8_QAT = "tflite-int8-qat"
    TFLITE_INT8_PRUNED = "tflite-int8-pruned"
    ONNX_FP32 = "onnx-fp32"
    ONNX_INT8 = "onnx-int8"


@dataclass(frozen=True)
class Gate:
    """Parity thresholds for one recipe, versus the Keras float model on the held-out test set.

    ``max_drop_pp``: accuracy drop in percentage points (one-sided: being better never fails);
    ``min_agreement``: top-1 agreement with Keras, gated only for recipes that keep the weights (post-training);
    ``max_class_drop_pp``: worst per-class accuracy drop, gated only for recipes that fine-tune;
    ``max_abs_diff``: max absolute output difference (None: not gated, e.g. int8 where units of the output
    scale are the meaningful measure); ``max_mse_ratio``: autoencoders, artifact MSE / Keras MSE;
    ``confidence``: one-sided confidence level of the bounds the drop/agreement gates are decided with
    (see :mod:`edgeport.check.gate_stats`).
    """

    max_drop_pp: float
    min_agreement: float
    max_abs_diff: Optional[float] = None
    max_mse_ratio: float = 1.10
    max_class_drop_pp: float = 10.0
    confidence: float = 0.95


@dataclass(frozen=True)
class RecipeSpec:
    """One row of the recipe table."""

    recipe: Recipe
    format: Format  # the runtime backend is chosen from the format (and the quantization)
    quantization: Quantization
    gate: Gate
    options: Mapping[str, Any] = field(default_factory=dict)  # accepted options -> defaults
    calibrated: bool = False  # uses the representative (calibration) samples
    bridge: bool = False  # needs the tf_keras/tfmot bridge (Keras models only)
    # changes the weights (QAT, pruning, ...): a different model, so it is gated on its accuracy drop (overall and
    # worst class), and its agreement with the old weights is reported, not gated
    fine_tunes: bool = False
    description: str = ""

    @property
    def suffix(self) -> str:
        """The artifact's file suffix (from its format)."""
        return self.format.suffix


# Fine-tuning options (see convert/finetune.py): optimizer steps = `steps` if > 0, else the larger of the recipe's
# floor (300 QAT, 600 pruning) and `epochs` passes over the data; `lr` is the peak of a warm-up + cosine schedule.
# QAT 1e-4: a converged model only has to adapt to fake quantization, so steps stay small next to the weights.
_FINE_TUNE = {"epochs": 3, "steps": 0, "lr": 1e-4, "batch_size": 32}

RECIPES: Dict[Recipe, RecipeSpec] = {r.recipe: r for r in [
    # float32 export is the same arithmetic in a different kernel library: outputs agree to float rounding.
    # 1e-4 absolute covers softmax outputs after ~100 float32 MACs per output with different summation order.
    RecipeSpec(Recipe.TFLITE_FP32, Format.TFLITE, Quantization.FLOAT32,
               Gate(max_drop_pp=0.0, min_agreement=1.0, max_abs_diff=1e-4),
               description="float32 TFLite"),
    # float16 weights (compute in float32): ~3 significant digits per weight; a near-tie can flip, so
    # agreement >= 99% and 0.5 pp, and outputs within 1e-2 (float16 epsilon ~1e-3 times a few terms). 99% rather
    # than 99.5%: with no disagreement at all, 300 samples show >= 99% at 95% confidence, 99.5% would need 600.
    RecipeSpec(Recipe.TFLITE_FP16, Format.TFLITE, Quantization.FLOAT16,
               Gate(max_drop_pp=0.5, min_agreement=0.99, max_abs_diff=1e-2),
               description="float16 weights"),
    # dynamic range: int8 weights, float activations quantized on the fly per batch; int8-level error.
    RecipeSpec(Recipe.TFLITE_DYNAMIC, Format.TFLITE, Quantization.DYNAMIC_INT8,
               Gate(max_drop_pp=1.0, min_agreement=0.97), description="int8 weights, float I/O"),
    # full int8: the promise is <= 1.0 pp and >= 97% agreement on the held-out set.
    RecipeSpec(Recipe.TFLITE_INT8, Format.TFLITE, Quantization.INT8,
               Gate(max_drop_pp=1.0, min_agreement=0.97), options={"calibration": 300}, calibrated=True,
               description="full-integer PTQ, int8 in/out"),
    # QAT fine-tunes with the quantization in the loop: a new model, so it is held to the accuracy promise
    # (<= 1.0 pp drop) and may move borderline samples either way (min_agreement is reported only). Per class
    # 10 pp: a class is ~1/10 of the split (36 digits samples, 2.8 pp each), so this catches a class the
    # fine-tuning damaged, not the few borderline samples it moves by design.
    RecipeSpec(Recipe.TFLITE_INT8_QAT, Format.TFLITE, Quantization.INT8,
               Gate(max_drop_pp=1.0, min_agreement=0.97, max_class_drop_pp=10.0), options=dict(_FINE_TUNE),
               calibrated=True, bridge=True, fine_tunes=True,
               description="quantization-aware fine-tuning (tfmot), int8"),
    # Weights removed (the highest sparsity of 0.75/0.5/0.3 that holds), fine-tuned, then int8: 1.5 pp overall
    # (pruning costs a little); per class as QAT.
    RecipeSpec(Recipe.TFLITE_INT8_PRUNED, Format.TFLITE, Quantization.INT8,
               Gate(max_drop_pp=1.5, min_agreement=0.95, max_class_drop_pp=10.0),
               # sparsity 0 = search the ladder 0.75, 0.5, 0.3 (keep the highest that passes on the validation
               # split); lr 3e-4 peak: removed weights must be compensated, more than QAT needs, less than training
               options={"sparsity": 0.0, "pqat": False, **_FINE_TUNE, "epochs": 8, "lr": 3e-4},
               calibrated=True, bridge=True, fine_tunes=True,
               description="magnitude pruning (sparsity search) + int8 (gzip size shrinks)"),
    RecipeSpec(Recipe.ONNX_FP32, Format.ONNX, Quantization.FLOAT32,
               Gate(max_drop_pp=0.0, min_agreement=1.0, max_abs_diff=1e-4),
               description="float32 ONNX (tf2onnx)"),
    # onnxruntime QDQ int8 (per-channel weights): same promise as TFLite int8.
    RecipeSpec(Recipe.ONNX_INT8, Format.ONNX, Quantization.INT8,
               Gate(max_drop_pp=1.0, min_agreement=0.97), options={"calibration": 300}, calibrated=True,
               description="onnxruntime QDQ int8, per-channel"),
]}

DEFAULT_RECIPES = [r.value for r in RECIPES]


def still_working(exclude) -> str:
    """Comma-separated recipes whose spec ``exclude(spec)`` rejects not: what to suggest when some cannot run."""
    return ", ".join(r.value for r, spec in RECIPES.items() if not exclude(spec))


@dataclass(frozen=True)
class RecipeJob:
    """One recipe to convert: the recipe, its options (table defaults with the user's overrides) and its gate.

    Built once by :func:`plan_recipes`; picklable, so the pipeline hands it to the child process as it is.
    """

    recipe: Recipe
    options: Mapping[str, Any]
    gate: Gate

    @classmethod
    def of(cls, recipe: Recipe, overrides: Optional[Mapping[str, Any]] = None) -> "RecipeJob":
        """The job for ``recipe`` with option ``overrides`` validated against its table row."""
        return cls(recipe, recipe_options(recipe, overrides or {}), RECIPES[recipe].gate)

    @property
    def spec(self) -> RecipeSpec:
        """The recipe's row in :data:`RECIPES`."""
        return RECIPES[self.recipe]

    @property
    def name(self) -> str:
        """The recipe's name as users type it (also the artifact's name)."""
        return self.recipe.value

    @property
    def filename(self) -> str:
        """The artifact's file name in the bundle."""
        return f"{self.recipe.value}{self.spec.suffix}"


@dataclass(frozen=True)
class RecipePlan:
    """The recipes one `edgeport convert` runs, in table order.

    ``explicit``: the user named them, so every one must succeed; otherwise ("all") the run converts all that
    apply and skips, loudly, the ones this model cannot take.
    """

    jobs: Tuple[RecipeJob, ...]
    explicit: bool = False

    @classmethod
    def of(cls, recipes: Sequence[Recipe], explicit: bool = True,
           options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> "RecipePlan":
        """A plan for ``recipes`` (any order, put in table order) with per-recipe option overrides by name."""
        options = options or {}
        chosen = [r for r in RECIPES if r in recipes]
        jobs = tuple(RecipeJob.of(r, options.get(r.value, {})) for r in chosen)
        for name in options:
            if name not in {r.value for r in chosen}:
                raise UsageError(f"options given for recipe {name!r}, which is not being converted "
                                 f"(converting: {', '.join(r.value for r in chosen)}).")
        return cls(jobs, explicit)

    @property
    def recipes(self) -> List[Recipe]:
        """The recipes, in table order."""
        return [j.recipe for j in self.jobs]


def plan_recipes(selection: Union[str, Sequence[str], None] = "all",
                 options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> RecipePlan:
    """--recipes (or the config's ``recipes``: a string or a list) and [options] -> the :class:`RecipePlan`.

    'all' (the default) means every recipe that applies; otherwise a comma-separated list of names, each of
    which must succeed. Unknown names get a close-match hint; unknown option names are rejected, never ignored.
    """
    text = ",".join(selection) if isinstance(selection, (list, tuple)) else (selection or "all")
    if text.strip() == "all":
        return RecipePlan.of(list(RECIPES), explicit=False, options=options)
    chosen = []
    for name in (p.strip() for p in text.split(",") if p.strip()):
        try:
            chosen.append(Recipe(name))
        except ValueError:
            raise unknown_name("recipe", name, DEFAULT_RECIPES) from None
    if not chosen:
        raise UsageError("--recipes is empty; name at least one recipe or 'all'.")
    return RecipePlan.of(chosen, explicit=True, options=options)


def recipe_options(recipe: Recipe, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """The recipe's options with ``overrides`` applied; unknown option names are rejected, never ignored."""
    spec = RECIPES[recipe]
    opts = dict(spec.options)
    for k, v in overrides.items():
        if k not in spec.options:
            raise unknown_name(f"option for recipe {recipe.value}", k, spec.options or ["(none)"])
        opts[k] = type(spec.options[k])(v) if not isinstance(spec.options[k], bool) else bool(v)
    return opts
