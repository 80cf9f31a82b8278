"""edgeport-runtime's numpy backend against ai-edge-litert's default interpreter (the oracle, XNNPACK on) on
models converted here by the real TFLite converter: a many-op model in `make test`, single-op catalog and the
zoo in `make test-slow`. int8 must be bit-identical; float32 / float16-weight models within 1e-5.
"""
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from edgeport.core import tfenv

tfenv.import_tf()
import keras  # noqa: E402

from edgeport.convert import exporters  # noqa: E402
from edgeport.convert.recipes import RECIPES, Recipe  # noqa: E402
from edgeport.convert.source import Source  # noqa: E402
from edgeport.convert.worker import Job  # noqa: E402
from edgeport.train.zoo import MODELS, build_model  # noqa: E402
from edgeport_runtime.backends.numpy_backend import NumpySession  # noqa: E402
from test_convert_catalog import CATALOG, _build  # noqa: E402

L = keras.layers
TFLITE = [Recipe.TFLITE_FP32, Recipe.TFLITE_FP16, Recipe.TFLITE_DYNAMIC, Recipe.TFLITE_INT8]


def _many_ops():
    """One small graph with most kernels the backend has, ending without softmax so int8 steps stay visible."""
    inp = keras.Input((9, 9, 3))
    x = L.ZeroPadding2D(((1, 0), (0, 1)))(inp)  # PAD
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)  # CONV_2D, fused RELU6
    a = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)  # multiplier 2, SAME
    b = L.Conv2D(16, 1, activation="hard_swish")(x)  # HARD_SWISH
    x = L.Add()([a, b])
    x = L.Subtract()([x, L.Conv2D(16, 1, activation="sigmoid")(x)])  # SUB, LOGISTIC
    x = L.Multiply()([x, L.Conv2D(16, 1, activation="tanh")(x)])  # MUL, TANH
    c = L.MaxPooling2D(2, padding="same")(x)
    d = L.AveragePooling2D(2, padding="same")(x)  # the count excludes padding
    x = L.Concatenate()([c, d])
    x = L.Conv2D(8, 3, padding="same")(x)  # (dilated convs become SPACE_TO_BATCH_ND: refused, not in the zoo)
    x = L.GlobalAveragePooling2D()(x)  # MEAN
    return keras.Model(inp, L.Dense(6)(x))


EXTRA = {
    "many_ops": _many_ops,
    "logistic": lambda: keras.Model(i := keras.Input((12,)), L.Activation("sigmoid")(L.Dense(8)(i))),
    "tanh": lambda: keras.Model(i := keras.Input((12,)), L.Activation("tanh")(L.Dense(8)(i))),
    "gap1d": lambda: keras.Model(i := keras.Input((16, 3)), L.GlobalAveragePooling1D()(L.Conv1D(4, 3)(i))),
}


def _convert(model, x, recipe, out: Path) -> Path:
    shape = tuple(model.inputs[0].shape[1:])
    src = Source(Path("numpy-parity"), "keras", model, shape, tuple(model.outputs[0].shape[1:]))
    job = Job(src, x, None, None, None, None, "classification", 0)
    spec = RECIPES[recipe]
    exporters.export_tflite(job, spec, dict(spec.options), out)
    return out


def _input_for(path, x):
    d = Interpreter(model_path=str(path)).get_input_details()[0]
    if d["dtype"] == np.int8:
        scale, zp = d["quantization"]
        return np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
    return x


def _litert(path, x):
    it = Interpreter(model_path=str(path), num_threads=1)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _compare(path, x, recipe):
    xin = _input_for(path, x)
    s = NumpySession(str(path))
    y, ref = s.run([xin])[0], _litert(path, xin)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    if recipe == Recipe.TFLITE_INT8:
        np.testing.assert_array_equal(y, ref)
    else:
        # same float32 arithmetic in another summation order (float16 weights are widened to float32 exactly;
        # dynamic-range layers quantize activations exactly as XNNPACK does, then scale back in float32):
        # observed <= 5e-8 on these O(1) outputs; 1e-5 is the bound
        np.testing.assert_allclose(y, ref, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def many_ops_model():
    keras.utils.set_random_seed(0)
    model = _many_ops()
    x = np.random.default_rng(0).uniform(-1, 1, (32, 9, 9, 3)).astype(np.float32)
    return model, x


@pytest.mark.parametrize("recipe", TFLITE, ids=lambda r: r.value)
def test_many_op_model_matches_litert(tmp_path, many_ops_model, recipe):
    model, x = many_ops_model
    _compare(_convert(model, x, recipe, tmp_path / "m.tflite"), x, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", TFLITE, ids=lambda r: r.value)
@pytest.mark.parametrize("name", sorted(CATALOG) + sorted(set(EXTRA) - {"many_ops"}))
def test_catalog_layer_matches_litert(tmp_path, name, recipe):
    if name in CATALOG:
        model, x = _build(name)
    else:
        keras.utils.set_random_seed(0)
        model = EXTRA[name]()
        x = np.random.default_rng(0).uniform(-1, 1, (32, *model.inputs[0].shape[1:])).astype(np.float32)
    _compare(_convert(model, x, recipe, tmp_path / "m.tflite"), x, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", TFLITE, ids=lambda r: r.value)
@pytest.mark.parametrize("name", ["mlp", "tiny_cnn", "ds_cnn", "resnet8", "mobilenet_v1", "conv1d", "autoencoder"])
def test_zoo_model_matches_litert(tmp_path, name, recipe):
    row = MODELS[name]
    keras.utils.set_random_seed(0)
    model = build_model(name, row.reference_shape, row.reference_classes or 10)
    x = np.random.default_rng(0).uniform(0, 1, (16, *row.reference_shape)).astype(np.float32)
    _compare(_convert(model, x, recipe, tmp_path / "m.tflite"), x, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [Recipe.TFLITE_INT8_QAT, Recipe.TFLITE_INT8_PRUNED], ids=lambda r: r.value)
def test_trained_int8_recipes_match_litert_bit_for_bit(tmp_path, recipe):
    keras.utils.set_random_seed(0)
    model = build_model("tiny_cnn", (8, 8, 1), 10)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    src = Source(Path("numpy-parity"), "keras", model, (8, 8, 1), (10,))
    job = Job(src, x, x, rng.integers(0, 10, 64), None, None, "classification", 0)
    spec = RECIPES[recipe]
    out = tmp_path / "m.tflite"
    exporters.EXPORTERS[recipe](job, spec, dict(spec.options, epochs=1), out)
    _compare(out, x, Recipe.TFLITE_INT8)
