"""Layer-wise diagnosis of an int8 TFLite artifact that failed its parity gate.

Runs the int8 artifact and a float32 TFLite of the same model side by side with every intermediate tensor kept,
pairs their ops in graph order (the converter keeps the op sequence; the int8 graph only adds QUANTIZE /
DEQUANTIZE at its ends) and measures each int8 tensor's error against the float one, relative to the float
tensor's spread. The layers with the largest error and the share of clipped inputs point at the fix.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edgeport_runtime.quant import quantize

from ..convert.exporters import export_tflite
from ..convert.recipes import RECIPES, Recipe
from ..convert.source import load_source
from ..convert.worker import Job

SAMPLES = 64  # test samples run with all tensors preserved: enough for stable per-layer errors, quick to run
_SKIP = {"QUANTIZE", "DEQUANTIZE"}
MAX_STEPS_ADVICE = 4000  # fine-tuning steps beyond which "longer" is no longer the fix worth suggesting
MORE_CALIBRATION = 1000  # calibration samples worth suggesting; beyond this more samples rarely move int8 ranges
NOTHING_APPLIES = ("none of the usual fixes applies to this artifact's settings: use a float recipe "
                   "(tflite-fp16, tflite-dynamic) for this model, or leave this recipe out (--recipes)")


def _pruned_advice(extra: Dict[str, Any]) -> List[str]:
    """Pruning options still worth changing, never one the artifact already has."""
    fixes = []
    target = float(extra.get("target_sparsity", 0.75))
    ft = extra.get("fine_tune") or {}
    epochs = int(ft.get("epochs", 8))
    if target > 0.5:
        fixes.append(f"prune less: sparsity = 0.5 under [convert.options.tflite-int8-pruned] (now {target:g}; "
                     "small models have little to remove)")
    steps = (ft.get("schedule") or {}).get("steps")
    if steps:  # step-based schedules (small data gets a step floor, so more epochs may change nothing)
        if steps < MAX_STEPS_ADVICE:
            fixes.append(f"fine-tune longer: steps = {2 * steps} under [convert.options.tflite-int8-pruned] "
                         f"(now {steps})")
    elif epochs < 16:
        fixes.append(f"fine-tune longer: epochs = 16 under [convert.options.tflite-int8-pruned] (now {epochs})")
    if not extra.get("pqat"):
        fixes.append("pruning-preserving QAT: pqat = true under [convert.options.tflite-int8-pruned]")
    return fixes or [NOTHING_APPLIES]


def _qat_advice(extra: Dict[str, Any]) -> List[str]:
    """QAT options still worth changing."""
    ft = extra.get("fine_tune") or {}
    epochs, lr = int(ft.get("epochs", 3)), float(ft.get("lr", 1e-4))
    fixes = []
    steps = (ft.get("schedule") or {}).get("steps")
    if steps:
        if steps < MAX_STEPS_ADVICE:
            fixes.append(f"fine-tune longer: steps = {2 * steps} under [convert.options.tflite-int8-qat] "
                         f"(now {steps})")
    elif epochs < 10:
        fixes.append(f"fine-tune longer: epochs = {max(10, 2 * epochs)} under [convert.options.tflite-int8-qat] "
                     f"(now {epochs})")
    if lr > 1e-5:
        fixes.append(f"a smaller learning rate: lr = {lr / 10:g} under [convert.options.tflite-int8-qat] "
                     f"(now {lr:g})")
    return fixes or [NOTHING_APPLIES]


FINE_TUNE_ADVICE = {"tflite-int8-pruned": _pruned_advice, "tflite-int8-qat": _qat_advice}


def _run_all(path: Path, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate: it fuses ops into DELEGATE nodes and hides the per-layer tensors.
    it = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    if np.dtype(inp["dtype"]) == np.int8:
        s, zp = inp["quantization"]
        x = quantize(x, s, zp)
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    details = {t["index"]: t for t in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] not in _SKIP]
    return it, ops, details


def _float_tflite(bdir: Path, manifest, work: Path) -> Path:
    fp32 = next((a for a in manifest.artifacts if a.recipe == "tflite-fp32"), None)
    if fp32 is not None:
        return bdir / fp32.path
    src = load_source(manifest.source.path)
    out = work / "fp32.tflite"
    export_tflite(Job(src, np.zeros((1, *src.input_shape), np.float32), None, None, None, None, manifest.task, 0),
                  RECIPES[Recipe.TFLITE_FP32], {}, out)
    return out


def diagnose_int8(bdir: Path, manifest, art, data, x_test: np.ndarray) -> Dict[str, Any]:
    """Per-layer error of int8 artifact ``art`` and the fixes that apply; a dict for parity.json."""
    spec = art.inputs[0]
    lo = (-128 - spec.zero_point) * spec.scale
    hi = (127 - spec.zero_point) * spec.scale
    half = spec.scale / 2  # values within half a step of the range still round onto its ends correctly
    clipped = float(np.mean((x_test < lo - half) | (x_test > hi + half)))
    x = x_test[:SAMPLES].astype(np.float32)
    layers: List[Dict[str, Any]] = []
    if art.recipe in FINE_TUNE_ADVICE:
        # its float reference would be the fine-tuned float model, which the bundle does not keep: the layer
        # comparison against the original weights would measure the fine-tuning, so advise on its options instead
        return {"input_clipped_fraction": round(clipped, 4), "worst_layers": [], "layers_compared": 0,
                "suggested_fixes": FINE_TUNE_ADVICE[art.recipe](art.extra or {})}
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors warns that it is for debugging: it is
        it_q, ops_q, det_q = _run_all(bdir / art.path, x)
        it_f, ops_f, det_f = _run_all(_float_tflite(bdir, manifest, Path(d)), x)
        if [o["op_name"] for o in ops_q] == [o["op_name"] for o in ops_f]:
            for oq, of in zip(ops_q, ops_f):
                tq, tf_ = det_q[oq["outputs"][0]], det_f[of["outputs"][0]]
                s, zp = tq["quantization"]
                if not s:
                    continue
                vq = (it_q.get_tensor(tq["index"]).astype(np.float32) - zp) * s
                vf = it_f.get_tensor(tf_["index"]).astype(np.float32)
                if vq.shape != vf.shape:
                    continue
                rmse = float(np.sqrt(np.mean((vq - vf) ** 2)))
                layers.append({"op": oq["op_name"], "tensor": tq["name"], "rmse": rmse,
                               "rmse_over_scale": rmse / s, "relative_error": rmse / (float(vf.std()) + 1e-12)})
    layers.sort(key=lambda r: -r["relative_error"])
    fixes = []
    calib = int(manifest.calibration.count or 0)
    if clipped > 0.005:
        fixes.append(f"{clipped:.1%} of the test inputs fall outside the calibrated input range: calibrate on data "
                     "like the test/deployment data (--data)"
                     + (f" and more of it (--calibration {MORE_CALIBRATION})" if calib < MORE_CALIBRATION else ""))
    if layers and layers[0]["relative_error"] > 0.05:
        worst = layers[0]["tensor"]
        fixes.append(f"keep the worst layer ({worst}) in float: use tflite-dynamic or tflite-fp16 for this model")
    if art.recipe != "tflite-int8-qat":
        qat = next((a.name for a in manifest.artifacts if a.recipe == "tflite-int8-qat"), None)
        fixes.append(f"quantization-aware training: compare with this bundle's {qat} artifact" if qat else
                     "quantization-aware training: add the tflite-int8-qat recipe")
    if not clipped > 0.005 and calib < MORE_CALIBRATION:
        fixes.append(f"more representative calibration samples (--calibration {MORE_CALIBRATION}; "
                     f"this bundle used {calib})")
    if not fixes:
        fixes.append(NOTHING_APPLIES)
    return {"input_clipped_fraction": round(clipped, 4), "worst_layers": layers[:5],
            "layers_compared": len(layers), "suggested_fixes": fixes}
