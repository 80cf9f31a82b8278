"""Numerical catalog: tiny single-layer models through every recipe, run by edgeport-runtime, vs Keras.

Post-training recipes run in-process here (fast); the child-process pipeline is covered by test_convert_cli.py.
Every tolerance says why it is that number. Inputs are uniform in [-1, 1]; calibration uses the same 64 samples.
"""
from pathlib import Path

import numpy as np
import pytest

from edgeport.core import tfenv

tfenv.import_tf()
import keras  # noqa: E402

import edgeport_runtime as er  # noqa: E402
from edgeport.convert import exporters  # noqa: E402
from edgeport.convert.bridge import BridgeError, to_tf_keras  # noqa: E402
from edgeport.convert.recipes import RECIPES, Recipe  # noqa: E402
from edgeport.convert.source import Source  # noqa: E402
from edgeport.convert.worker import Job  # noqa: E402

L = keras.layers


def _one(shape, layer):
    inp = keras.Input(shape)
    return keras.Model(inp, layer(inp))


def _residual(merge):
    inp = keras.Input((8, 8, 3))
    return keras.Model(inp, merge([L.Conv2D(3, 1)(inp), inp]))


CATALOG = {
    "dense": lambda: _one((16,), L.Dense(8)),
    "conv2d": lambda: _one((8, 8, 3), L.Conv2D(4, 3, padding="same")),
    "depthwise": lambda: _one((8, 8, 3), L.DepthwiseConv2D(3)),
    "separable": lambda: _one((8, 8, 3), L.SeparableConv2D(4, 3)),
    "conv1d": lambda: _one((16, 3), L.Conv1D(4, 3)),
    "maxpool": lambda: _one((8, 8, 3), L.MaxPooling2D()),
    "avgpool": lambda: _one((8, 8, 3), L.AveragePooling2D(2)),
    "batchnorm": lambda: _one((8, 8, 3), L.BatchNormalization()),
    "add": lambda: _residual(L.Add()),
    "concatenate": lambda: _residual(L.Concatenate()),
    "relu6": lambda: _one((8, 8, 3), L.ReLU(6.0)),
    "softmax": lambda: _one((10,), L.Softmax()),
    "flatten": lambda: _one((4, 4, 2), L.Flatten()),
    "reshape": lambda: _one((4, 4, 2), L.Reshape((8, 4))),
}


def _build(name):
    keras.utils.set_random_seed(0)
    model = CATALOG[name]()
    rng = np.random.default_rng(0)
    for layer in model.layers:  # give BatchNormalization non-trivial statistics to fold
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, .1, b.shape),
                               rng.normal(0, .1, m.shape), rng.uniform(0.5, 1.5, v.shape)])
    shape = tuple(model.inputs[0].shape[1:])
    x = rng.uniform(-1, 1, (64, *shape)).astype(np.float32)
    return model, x


def _export(tmp_path, model, x, recipe, train=None):
    shape = tuple(model.inputs[0].shape[1:])
    src = Source(Path("catalog"), "keras", model, shape, tuple(model.outputs[0].shape[1:]))
    tx, ty = train if train else (None, None)
    job = Job(src, x, tx, ty, None, None, "classification", 0)
    spec = RECIPES[recipe]
    out = tmp_path / f"{recipe.value}{spec.suffix}"
    opts = dict(spec.options, epochs=1)
    if spec.fine_tunes:  # 4 steps (the ramp ends at 2), fixed sparsity: the export path, not the search
        opts.update(steps=4, **({"sparsity": 0.75} if "sparsity" in opts else {}))
    extra = exporters.EXPORTERS[recipe](job, spec, opts, out)
    return er.load(out, num_threads=1), extra


def _span(ref):
    return float(ref.max() - ref.min())


def _max_diff(y, ref):
    return float(np.abs(y - ref).max())


def _check_fp32(rt, ref, y, extra):
    # same float32 arithmetic, other kernels/summation order: observed <= 4e-7; 1e-5 leaves room for
    # other SIMD widths without hiding a real error (which would be >= 1e-3 on these O(1) outputs)
    assert _max_diff(y, ref) <= 1e-5


def _check_fp16(rt, ref, y, extra):
    # float16 weights: relative rounding 2^-11 per weight, summed over <= 27 terms: observed <= 0.02% of the
    # output range; 0.2% allows for unlucky sums
    assert _max_diff(y, ref) <= 2e-3 * _span(ref)


def _check_dynamic(rt, ref, y, extra):
    # int8 weights (1/127 of the largest weight per step) with float activations: <= 1% of the range
    assert _max_diff(y, ref) <= 1e-2 * _span(ref)


def _check_int8(rt, ref, y, extra):
    # in units of the output scale: input rounding (0.5 step propagated), weight rounding (~1 step for
    # layers with weights) and output rounding (0.5 step); separable conv requantizes once more in between.
    # Observed <= 1.75 steps; 2.5 steps is the budget.
    assert _max_diff(y, ref) <= 2.5 * rt.outputs[0].scale


def _check_onnx_int8(rt, ref, y, extra):
    # QDQ keeps float I/O, so no output scale to count in: same error sources as int8, observed <= 1.05%
    # of the output range (softmax, whose range is small); 2% is the budget
    assert _max_diff(y, ref) <= 2e-2 * _span(ref)


def _check_qat(rt, ref, y, extra):
    # QAT learns its own ranges in one epoch: within 3% of the output range of the float model, or one step
    # of its own output scale where QAT fixes the range by design (ReLU6 -> [0, 6]: a 0.047 step)
    assert _max_diff(y, ref) <= max(3e-2 * _span(ref), rt.outputs[0].scale)
    assert rt.inputs[0].dtype == "int8" and rt.outputs[0].dtype == "int8"


def _check_pruned(rt, ref, y, extra):
    if extra["sparsity"] == 0.0:  # no prunable kernel in this layer (pooling, depthwise, ...): nothing changes
        # the pruned recipe is then plain int8 after one epoch of fine-tuning: within 3% of the output range
        assert _max_diff(y, ref) <= 3e-2 * _span(ref)
        return
    # 75% of the weights are zeroed, so the function changes; it must still be recognisably the same layer
    # (correlation > 0.5) and the reported sparsity must be the target (within the schedule's rounding)
    assert 0.70 <= extra["sparsity"] <= 0.80
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.5


# Every recipe needs its own check: a recipe added to RECIPES without one fails
# test_every_recipe_has_a_catalog_check (and _check refuses it) instead of running unchecked.
CHECKS = {
    Recipe.TFLITE_FP32: _check_fp32,
    Recipe.ONNX_FP32: _check_fp32,
    Recipe.TFLITE_FP16: _check_fp16,
    Recipe.TFLITE_DYNAMIC: _check_dynamic,
    Recipe.TFLITE_INT8: _check_int8,
    Recipe.ONNX_INT8: _check_onnx_int8,
    Recipe.TFLITE_INT8_QAT: _check_qat,
    Recipe.TFLITE_INT8_PRUNED: _check_pruned,
}

# every recipe that needs no fine-tuning runs in-process on the whole catalog; the bridge recipes below
POST_TRAINING = [r for r in Recipe if not RECIPES[r].bridge]


def _check(recipe, rt, ref, y, extra=None):
    """Assert ``y`` (from artifact ``rt`` of ``recipe``) is within that recipe's tolerance of Keras' ``ref``."""
    if recipe not in CHECKS:
        pytest.fail(f"no catalog tolerance for recipe {recipe.value!r}: add a check for it to CHECKS")
    CHECKS[recipe](rt, ref, y, extra or {})


def test_every_recipe_has_a_catalog_check():
    assert set(CHECKS) == set(Recipe) == set(RECIPES)


def test_check_refuses_a_recipe_without_tolerance(monkeypatch):
    monkeypatch.delitem(CHECKS, Recipe.TFLITE_FP16)
    y = np.zeros((2, 3), np.float32)
    with pytest.raises(pytest.fail.Exception, match="no catalog tolerance for recipe 'tflite-fp16'"):
        _check(Recipe.TFLITE_FP16, None, y, y)


@pytest.mark.parametrize("recipe", POST_TRAINING, ids=lambda r: r.value)
@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_layer_through_recipe_matches_keras(tmp_path, name, recipe):
    model, x = _build(name)
    ref = np.asarray(model(x))
    rt, _ = _export(tmp_path, model, x, recipe)
    y = rt.predict(x)
    assert y.shape == ref.shape
    _check(recipe, rt, ref, y)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_bridge_copies_catalog_layer_exactly(name):
    model, x = _build(name)
    rebuilt = to_tf_keras(model)
    for a, b in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    # identical weights; the two Keras versions may order float32 ops differently (observed 0 to ~1e-7)
    np.testing.assert_allclose(np.asarray(model(x)), rebuilt(x).numpy(), atol=1e-6)


FAST_BRIDGE = ["conv2d", "dense", "separable", "add"]  # make test; the rest of the catalog runs in make test-slow
# tfmot's default 8-bit QAT scheme has no QuantizeConfig for these (seen with tfmot 0.8.1): the recipe must say so
QAT_UNSUPPORTED = {"conv1d", "batchnorm"}


@pytest.mark.parametrize("name", [n if n in FAST_BRIDGE else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CATALOG)])
def test_qat_and_pruning_on_catalog_layers(tmp_path, name):
    model, x = _build(name)
    ref = np.asarray(model(x))
    y_train = np.zeros(len(x), np.int64)  # unused by the loss below: targets are the model's own outputs
    # fine-tune towards the model's own outputs with MSE so the function should stay put
    from edgeport.convert import exporters as ex

    orig = ex._fine_tune

    def distill(m, split, task, schedule, seed, callbacks=()):
        import tf_keras

        m.compile(tf_keras.optimizers.Adam(1e-4), loss="mse")
        m.fit(x, ref, epochs=1, batch_size=16, verbose=0, callbacks=list(callbacks))
        return {}

    ex._fine_tune = distill
    try:
        (tmp_path / "q").mkdir()
        if name in QAT_UNSUPPORTED:
            with pytest.raises(ex.ConversionError, match=r"tfmot cannot quantize.*is not supported.*still work"):
                _export(tmp_path / "q", model, x, Recipe.TFLITE_INT8_QAT, (x, y_train))
            qat = None
        else:
            qat, _ = _export(tmp_path / "q", model, x, Recipe.TFLITE_INT8_QAT, (x, y_train))
        pruned, extra = _export(tmp_path, model, x, Recipe.TFLITE_INT8_PRUNED, (x, y_train))
    finally:
        ex._fine_tune = orig
    if qat is not None:
        _check(Recipe.TFLITE_INT8_QAT, qat, ref, qat.predict(x))
    _check(Recipe.TFLITE_INT8_PRUNED, pruned, ref, pruned.predict(x), extra)


def test_bridge_refuses_unknown_layer_naming_it_and_what_still_works():
    inp = keras.Input((8, 4))
    model = keras.Model(inp, L.LSTM(3, name="my_lstm")(inp))
    with pytest.raises(BridgeError, match=r"layer 'my_lstm' \(LSTM\).*Recipes that still work: tflite-fp32"):
        to_tf_keras(model)


def test_int8_predict_equals_tflite_own_quantize_kernels(tmp_path):
    """edgeport-runtime quantizes/dequantizes in numpy; TFLite's QUANTIZE/DEQUANTIZE kernels must agree exactly.

    The same calibrated graph is converted twice: with int8 I/O (the runtime quantizes) and with float I/O
    (the converter inserts TFLite's own QUANTIZE/DEQUANTIZE ops). Outputs must be bit-identical.
    """
    tf = tfenv.import_tf()
    model, x = _build("conv2d")
    x = np.concatenate([x, x * 3])  # values beyond the calibrated range exercise clamping
    rt, _ = _export(tmp_path, model, x[:64], Recipe.TFLITE_INT8)
    d = tmp_path / "sm"
    model.export(str(d), format="tf_saved_model", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(d))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (tmp_path / "float_io.tflite").write_bytes(conv.convert())
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tmp_path / "float_io.tflite"), num_threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    np.testing.assert_array_equal(rt.predict(x), it.get_tensor(out["index"]))


# (low, high) calibration ranges: five input scales from 1.2e-4 to 5.1, zero points from -69 to 50
TIE_RANGES = [(-1, 1), (-0.3, 1), (-0.01, 0.02), (-7, 3), (-300, 1000)]


def _tie_values(scale, zero_point):
    """float32 values at and 1 ulp either side of every rounding tie q + 0.5 of the int8 range (+-3 beyond it).

    A tie is placed three ways because float32 cannot hold most of them exactly: (q + 0.5) * scale rounded from
    float64, (q + 0.5) / float32(1 / scale) and (q + 0.5) * float32(scale) in float32 -- 262 ties x 3 x 3 = 2,358.
    """
    s32 = np.float32(scale)
    q = np.arange(-128 - zero_point - 3, 128 - zero_point + 3, dtype=np.float64)
    half = (q + 0.5).astype(np.float32)
    at = np.concatenate([((q + 0.5) * scale).astype(np.float32), half / (np.float32(1) / s32), half * s32])
    return np.concatenate([at, np.nextafter(at, np.float32(np.inf)), np.nextafter(at, np.float32(-np.inf))])


def test_quantize_equals_litert_kernel_at_and_around_ties(tmp_path):
    """edgeport_runtime.quant.quantize == LiteRT's executed QUANTIZE (default XNNPACK delegate) on 11,790 tie values.

    Oracle: a float-in / int8-out TFLite graph that is QUANTIZE followed by a RESHAPE (which copies int8 values
    unchanged), converted once per calibration range so that five scales and zero points are covered.
    """
    from ai_edge_litert.interpreter import Interpreter

    from edgeport_runtime.quant import quantize

    tf = tfenv.import_tf()
    inp = keras.Input((1,))
    keras.Model(inp, L.Reshape((1, 1))(inp)).export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    rng = np.random.default_rng(0)
    total = 0
    for lo, hi in TIE_RANGES:
        cal = np.concatenate([[lo, hi], rng.uniform(lo, hi, 30)]).astype(np.float32).reshape(-1, 1)
        conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([cal[i:i + 1]] for i in range(len(cal)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_output_type = tf.int8  # the int8 output is the QUANTIZE result, copied by RESHAPE
        it = Interpreter(model_content=conv.convert(), num_threads=1)
        assert [op["op_name"] for op in it._get_ops_details()][0] == "QUANTIZE"
        inp_d, out_d = it.get_input_details()[0], it.get_output_details()[0]
        scale, zp = out_d["quantization"]
        x = _tie_values(scale, zp).reshape(-1, 1)
        it.resize_tensor_input(inp_d["index"], x.shape)
        it.allocate_tensors()
        it.set_tensor(inp_d["index"], x)
        it.invoke()
        litert = it.get_tensor(out_d["index"]).reshape(x.shape)
        np.testing.assert_array_equal(quantize(x, scale, zp), litert)
        # The values really sit on ties: TFLite's reference formula (divide, round halves away from zero)
        # disagrees with the executed kernel on 17-32% of them per scale; at least 10% proves ties were hit.
        v = x / np.float32(scale)
        reference = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zp, -128, 127).astype(np.int8)
        assert (reference != litert).mean() >= 0.10, (scale, zp)
        total += x.size
    assert total == 11_790


def test_pruning_preserving_qat_keeps_zeros_in_the_int8_file(tmp_path):
    """pqat = true: pruned, then QAT with the prune-preserving scheme; the zeros must survive into the .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    model, x = _build("conv2d")
    shape = tuple(model.inputs[0].shape[1:])
    src = Source(Path("catalog"), "keras", model, shape, tuple(model.outputs[0].shape[1:]))
    job = Job(src, x, x, np.zeros(len(x), np.int64), None, None, "classification", 0)
    from edgeport.convert import exporters as ex

    orig = ex._fine_tune
    ex._fine_tune = lambda m, split, task, schedule, seed, callbacks=(): (  # noqa: E731
        m.compile("adam", "mse"), m.fit(x, np.asarray(model(x)), epochs=1, batch_size=16, verbose=0,
                                        callbacks=list(callbacks)), {})[2]
    try:
        spec = RECIPES[Recipe.TFLITE_INT8_PRUNED]
        extra = ex.export_pruned(job, spec, dict(spec.options, pqat=True, sparsity=0.75, steps=4),
                                 tmp_path / "p.tflite")
    finally:
        ex._fine_tune = orig
    assert extra["pqat"] is True and 0.70 <= extra["sparsity"] <= 0.80
    it = Interpreter(model_path=str(tmp_path / "p.tflite"))
    conv = next(op for op in it._get_ops_details() if op["op_name"] == "CONV_2D")
    kernel = it.get_tensor(conv["inputs"][1])
    assert kernel.dtype == np.int8 and (kernel == 0).mean() >= 0.70  # 75% target, rounded to whole weights
