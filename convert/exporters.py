"""One exporter per recipe family, all with the signature ``export(job, spec, opts, out_path) -> dict``.

:data:`EXPORTERS` maps every :class:`~edgeport.convert.recipes.Recipe` to its exporter (a new recipe adds its row
to the recipe table and its entry here).

``job`` is an :class:`edgeport.convert.worker.Job` (source model, calibration and fine-tuning data); the returned
dict is extra metadata for the manifest (e.g. sparsity). These run inside a child process (see worker.py).
"""
from __future__ import annotations

import gzip
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from edgeport_runtime.errors import EdgeportError
from edgeport_runtime.kinds import Quantization
from edgeport_runtime.manifest import atomic_write_bytes

from ..core import tfenv
from . import finetune as ft
from .bridge import bridge_model, import_tfmot
from .recipes import RECIPES, Recipe, RecipeSpec, still_working


class ConversionError(EdgeportError):
    """A converter refused the model (names the op or layer and the recipes that still work)."""


def _still_work() -> str:
    return still_working(lambda s: s.quantization is Quantization.INT8)


def _representative(x: np.ndarray, src=None):
    """Calibration samples one at a time; several inputs: unpacked, as a dict keyed by input name (the
    converter matches them to the signature by name, whose order is alphabetical, not the model's)."""
    if src is not None and len(src.inputs or ()) > 1:
        from .multiio import unpack

        names, shapes = [n for n, _ in src.inputs], [s for _, s in src.inputs]

        def gen_many():
            for i in range(len(x)):
                yield dict(zip(names, unpack(x[i:i + 1], shapes)))
        return gen_many

    def gen():
        for i in range(len(x)):
            yield [x[i:i + 1].astype(np.float32)]
    return gen


def _convert(converter, recipe: Recipe) -> bytes:
    try:
        with tfenv.silenced((1, 2)):
            data = converter.convert()
    except Exception as e:  # the converter raises ConverterError / ValueError / RuntimeError with MLIR text
        text = str(e)
        ops = sorted(set(re.findall(r"'(tfl?\.[A-Za-z0-9_]+)'", text)) | set(re.findall(r"\b(tf\.[A-Z][A-Za-z0-9]+)", text)))
        if ops:
            why = f"it cannot lower op(s) {', '.join(ops)} to TFLite builtin kernels"
        else:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            why = (next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else type(e).__name__))[:300]
        raise ConversionError(f"{recipe.value}: the TFLite converter failed: {why}. Recipes that do not need "
                              f"full-int8 kernels may still work: {_still_work()}.") from None
    return compact_names(data)


def compact_names(data: bytes) -> bytes:
    """Shorten the converter's fused tensor names ("a;b;c;...") to their first part and drop the description.

    The converter names each fused tensor after every op folded into it; on ResNet-8 that is ~4 KB of strings,
    enough to push the int8 file from 29.6% to 30.3% of float32. The first part still names the Keras layer
    (what the parity diagnosis reports); input/output tensors and signatures are untouched.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.description = None
    for sg in model.subgraphs:
        io = set(sg.inputs) | set(sg.outputs)
        for i, t in enumerate(sg.tensors):
            if i not in io and t.name and b";" in t.name:
                t.name = t.name.split(b";")[0]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tflite_converter(fn_model, spec: RecipeSpec, calib: np.ndarray, saved_model: str = None, src=None):
    """A TFLite converter set up per ``spec``, from a SavedModel dir or ``fn_model=(concrete_fn, trackable)``."""
    tf = tfenv.import_tf()
    if saved_model is not None:
        conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    else:
        cf, trackable = fn_model
        conv = tf.lite.TFLiteConverter.from_concrete_functions([cf], trackable)
    if spec.quantization is Quantization.FLOAT16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif spec.quantization is Quantization.DYNAMIC_INT8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif spec.quantization is Quantization.INT8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(calib, src)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv


def export_tflite(job, spec: RecipeSpec, opts: Dict[str, Any], out_path: Path) -> Dict[str, Any]:
    """tflite-fp32 / -fp16 / -dynamic / -int8 (post-training).

    Keras 3 models go through ``model.export()`` + ``from_saved_model`` (quiet, and the same file as
    from_keras_model gives, which prints a SavedModel banner per call; a concrete function over a Keras 3 model
    keeps resource variables and int8 calibration then fails with READ_VARIABLE); SavedModels convert directly; tf_keras models through a concrete function.
    """
    src = job.source
    with tempfile.TemporaryDirectory() as d:
        if src.kind == "keras":
            with tfenv.silenced((1, 2)):
                src.model.export(d, format="tf_saved_model", verbose=False)
            conv = _tflite_converter(None, spec, job.calibration, saved_model=d, src=src)
        elif src.kind == "saved_model":
            conv = _tflite_converter(None, spec, job.calibration, saved_model=str(src.path))
        elif src.multi_io:
            f, cf = src.concrete_function()
            conv = _tflite_converter((cf, src.model), spec, job.calibration, src=src)
        else:
            conv = _tflite_converter(_keras_function(src.model, src.input_shape), spec, job.calibration)
        data = _convert(conv, spec.recipe)
    if src.multi_io:
        from .multiio_tflite import keras_io_order

        data = keras_io_order(data, src)
    atomic_write_bytes(out_path, data)
    return {}


def _keras_function(model, input_shape):
    tf = tfenv.import_tf()
    f = tf.function(lambda x: model(x, training=False),
                    input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="input")])
    return f.get_concrete_function(), model


def _fine_tune(model, split, task: str, schedule, seed: int, callbacks=()) -> Dict[str, Any]:
    """The one fine-tuning call of the bridge recipes (:func:`.finetune.fit`; tests substitute a distillation).

    ``split`` is (x_fit, y_fit, x_val, y_val) from :func:`.finetune.validation_split`.
    """
    return ft.fit(model, *split, task, schedule, seed, callbacks)


def _ptq_int8_bytes(job) -> bytes:
    """Plain post-training int8 of the source (the tflite-int8 recipe): what QAT has to beat."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "int8.tflite"
        export_tflite(job, RECIPES[Recipe.TFLITE_INT8], {}, p)
        return p.read_bytes()


def _labels(job, x_val, y_val):
    """What the validation result is scored against: labels, or the input itself for autoencoders."""
    return x_val if job.task == "autoencoder" else y_val


def export_qat(job, spec: RecipeSpec, opts: Dict[str, Any], out_path: Path) -> Dict[str, Any]:
    """tflite-int8-qat: bridge to tf_keras, freeze batch norm, tfmot quantize_model, step-scheduled fine-tuning
    with early stopping on the validation split (:mod:`.finetune`), full int8; then compared with plain int8."""
    _single_io_only(job, spec)
    tfmot = import_tfmot()
    split = ft.validation_split(job.train_x, job.train_y, job.val_x, job.val_y, job.seed)
    xf, _, xv, yv = split
    schedule = ft.plan(len(xf), opts, "qat")
    base = ft.freeze_batchnorm(bridge_model(job.source))
    try:
        qat = tfmot.quantization.keras.quantize_model(base)
    except (ValueError, RuntimeError, TypeError) as e:
        raise ConversionError(f"{spec.recipe.value}: tfmot cannot quantize this model ({str(e).splitlines()[0]}). "
                              f"Recipes that still work: {still_working(lambda s: s.recipe == Recipe.TFLITE_INT8_QAT)}.") \
            from None
    history = _fine_tune(qat, split, job.task, schedule, job.seed)
    data = _convert(_tflite_converter(_keras_function(qat, job.source.input_shape), spec, job.calibration),
                    spec.recipe)
    atomic_write_bytes(out_path, data)
    truth, keras_val = _labels(job, xv, yv), job.source.predict(xv)
    mine = ft.judge(job.task, spec.gate, truth, keras_val, ft.predict_tflite(data, xv))
    ptq = ft.judge(job.task, spec.gate, truth, keras_val, ft.predict_tflite(_ptq_int8_bytes(job), xv))
    worse = mine["value"] > ptq["value"] if job.task == "autoencoder" else mine["value"] < ptq["value"]
    warnings = []
    if worse:
        warnings.append(f"QAT ends worse than plain tflite-int8 on the {mine['samples']} validation samples "
                        f"({mine['metric']} {mine['value']:.4g} vs {ptq['value']:.4g}); tflite-int8 stays the "
                        "default artifact")
    return {"fine_tune": {**{k: opts[k] for k in ("epochs", "steps", "lr", "batch_size")}, **history,
                          "schedule": schedule.to_dict(), "batchnorm": "frozen", "fit_samples": len(xf),
                          "validation_samples": len(xv)},
            "validation": mine, "int8_validation": ptq, "worse_than_int8": bool(worse), "warnings": warnings}


# Which weight of each layer type tfmot prunes (its PruneRegistry); DepthwiseConv2D kernels are never pruned.
_PRUNED_WEIGHT = {"Dense": 0, "Conv1D": 0, "Conv2D": 0, "SeparableConv2D": 1}


def _sparsity(model) -> float:
    """Fraction of zeros over the weights pruning acts on (Dense/Conv kernels, separable pointwise kernels)."""
    zeros = total = 0
    for layer in model.layers:
        i = _PRUNED_WEIGHT.get(type(layer).__name__)
        if i is not None:
            w = layer.get_weights()[i]
            zeros += int((w == 0).sum())
            total += int(w.size)
    return zeros / total if total else 0.0


def _prune_once(tfmot, job, spec, opts, target: float, schedule, split):
    """One pruning attempt from the source weights: ramp to ``target`` by step, fine-tune, strip, int8 bytes."""
    base = ft.freeze_batchnorm(bridge_model(job.source))
    pschedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target, begin_step=0,
                                                     end_step=schedule.ramp_end_step,
                                                     frequency=schedule.prune_frequency)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=pschedule)
    history = _fine_tune(pruned, split, job.task, schedule, job.seed,
                         callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    sparsity = _sparsity(stripped)
    final = stripped
    if opts.get("pqat"):
        q = tfmot.quantization.keras
        annotated = q.quantize_annotate_model(stripped)
        final = q.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
        history["pqat"] = _fine_tune(final, split, job.task, ft.plan(len(split[0]), opts, "qat"), job.seed)
    data = _convert(_tflite_converter(_keras_function(final, job.source.input_shape), spec, job.calibration),
                    spec.recipe)
    return data, sparsity, history


def export_pruned(job, spec: RecipeSpec, opts: Dict[str, Any], out_path: Path) -> Dict[str, Any]:
    """tflite-int8-pruned: magnitude pruning ramped by optimizer step, fine-tune with early stopping, strip, int8.

    With ``sparsity`` unset (0) the ladder 0.75, 0.5, 0.3 is searched and the highest sparsity whose int8
    artifact passes the gate's thresholds on the validation split is kept (see :mod:`.finetune`); every attempt
    is recorded. When none passes, the recipe fails as not achievable with this data, with the numbers. A
    sparsity the user fixed is shipped as asked (parity judges it). With ``pqat`` the pruned model is also
    fine-tuned with pruning-preserving QAT. EXPERIMENTAL_SPARSITY is deliberately not used (its DENSIFY ops fail
    under LiteRT's default XNNPACK delegate, and tf2onnx cannot convert them): the .tflite keeps its size and
    the saving shows in gzip size.
    """
    _single_io_only(job, spec)
    targets, searched = ft.sparsity_targets(opts)
    for s in targets:
        if not 0.0 < s < 1.0:
            raise ConversionError(f"{spec.recipe.value}: sparsity must be in (0, 1), got {s}.")
    tfmot = import_tfmot()
    split = ft.validation_split(job.train_x, job.train_y, job.val_x, job.val_y, job.seed)
    xf, _, xv, yv = split
    schedule = ft.plan(len(xf), opts, "prune")
    keras_val, truth = job.source.predict(xv), _labels(job, xv, yv)
    made = {}

    def attempt(target: float) -> Dict[str, Any]:
        data, achieved, history = _prune_once(tfmot, job, spec, opts, target, schedule, split)
        made[target] = data
        result = ft.judge(job.task, spec.gate, truth, keras_val, ft.predict_tflite(data, xv))
        return {"target_sparsity": target, "sparsity": round(achieved, 4),
                "gzip_bytes": len(gzip.compress(data, 9, mtime=0)), **result, **history}

    chosen, attempts = ft.ladder(targets, attempt)
    if chosen is None and searched:
        raise ConversionError(f"{spec.recipe.value}: {ft.not_achievable(attempts, spec.gate, len(xf))}")
    pick = chosen or attempts[-1]
    atomic_write_bytes(out_path, made[pick["target_sparsity"]])
    warnings = []
    if not pick["passed"]:
        warnings.append(f"at the sparsity you fixed, {ft.describe_attempt(pick)} on the validation split, "
                        "outside the gate; parity will judge it")
    return {"sparsity": pick["sparsity"], "target_sparsity": pick["target_sparsity"], "searched": searched,
            "sparsity_search": attempts, "pqat": bool(opts.get("pqat")), "warnings": warnings,
            "fine_tune": {**{k: opts[k] for k in ("epochs", "steps", "lr", "batch_size")},
                          "schedule": schedule.to_dict(), "batchnorm": "frozen", "fit_samples": len(xf),
                          "validation_samples": len(xv)}}


def _single_io_only(job, spec: RecipeSpec) -> None:
    """Fine-tuning goes through tfmot on a rebuilt tf_keras model: one input and one output only."""
    if job.source.multi_io:
        raise ConversionError(f"{spec.recipe.value}: fine-tuning recipes take models with one input and one "
                              "output; this model has several. The post-training recipes convert it: "
                              f"{still_working(lambda s: s.fine_tunes)}.")


def _onnx_fp32_bytes(job) -> bytes:
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    tf = tfenv.import_tf()
    f, _ = job.source.concrete_function()
    spec = job.source.tensor_specs(tf)
    try:
        proto, _ = tf2onnx.convert.from_function(f, input_signature=spec, opset=17)
    except Exception as e:
        raise ConversionError(f"onnx-fp32: tf2onnx failed ({str(e).splitlines()[0][:300]}). The TFLite recipes "
                              "do not depend on it.") from None
    if job.source.multi_io:
        from .multiio_tflite import onnx_output_names

        onnx_output_names(proto, [n for n, _ in job.source.outputs])
    return proto.SerializeToString()


def export_onnx_fp32(job, spec: RecipeSpec, opts: Dict[str, Any], out_path: Path) -> Dict[str, Any]:
    """onnx-fp32 via tf2onnx.from_function on a tf.function with an explicit input signature.

    (tf2onnx 1.17's from_keras fails on Keras 3 models with KeyError 'keras_tensor_...'.)
    """
    atomic_write_bytes(out_path, _onnx_fp32_bytes(job))
    return {"opset": 17}


def export_onnx_int8(job, spec: RecipeSpec, opts: Dict[str, Any], out_path: Path) -> Dict[str, Any]:
    """onnx-int8: onnxruntime quantize_static, QDQ format, per-channel signed int8, same calibration samples.

    QDQ rather than QOperator (~5x faster on x86) and onnxruntime's own quantizer rather than tf2onnx's
    from_tflite (~6x faster at run time), both measured with onnxruntime 1.31 on x86_64.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = job.calibration
    src = job.source

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(len(calib)))

        def get_next(self):
            i = next(self._it, None)
            if i is None:
                return None
            if len(src.inputs or ()) > 1:
                from .multiio import unpack

                return dict(zip([n for n, _ in src.inputs], unpack(calib[i:i + 1], [s for _, s in src.inputs])))
            return {"input": calib[i:i + 1].astype(np.float32)}

    with tempfile.TemporaryDirectory() as d:
        fp32, pre = Path(d) / "fp32.onnx", Path(d) / "pre.onnx"
        fp32.write_bytes(_onnx_fp32_bytes(job))
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        tmp_out = Path(d) / "int8.onnx"
        try:
            quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        except Exception as e:
            raise ConversionError(f"onnx-int8: onnxruntime quantization failed ({str(e).splitlines()[0][:300]}). "
                                  "onnx-fp32 still works.") from None
        atomic_write_bytes(out_path, tmp_out.read_bytes())
    return {"format": "QDQ", "per_channel": True}


Exporter = Callable[[Any, RecipeSpec, Dict[str, Any], Path], Dict[str, Any]]

#: The exporter of each recipe, keyed like the recipe table (the worker calls ``EXPORTERS[job.recipe]``).
EXPORTERS: Dict[Recipe, Exporter] = {
    Recipe.TFLITE_FP32: export_tflite,
    Recipe.TFLITE_FP16: export_tflite,
    Recipe.TFLITE_DYNAMIC: export_tflite,
    Recipe.TFLITE_INT8: export_tflite,
    Recipe.TFLITE_INT8_QAT: export_qat,
    Recipe.TFLITE_INT8_PRUNED: export_pruned,
    Recipe.ONNX_FP32: export_onnx_fp32,
    Recipe.ONNX_INT8: export_onnx_int8,
}
