"""`edgeport convert` end to end through the CLI: every recipe, legacy inputs, and every bad-input case."""
import json

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport_runtime.errors import EdgeportError
from edgeport.convert.recipes import RECIPES


def test_convert_writes_every_recipe_and_a_complete_manifest(full_bundle):
    man = er.read_manifest(full_bundle)
    assert [a.recipe for a in man.artifacts] == [r.value for r in RECIPES]
    for a in man.artifacts:
        assert (full_bundle / a.path).is_file() and a.bytes == (full_bundle / a.path).stat().st_size
        assert a.gzip_bytes and len(a.sha256) == 64 and a.inputs[0].shape == [None, 8, 8, 1]
    int8 = man.artifact("tflite-int8")
    assert int8.inputs[0].dtype == "int8" and int8.inputs[0].scale > 0 and int8.quantization == "int8"
    assert man.calibration.count == 300 and "training split" in man.calibration.source
    assert man.labels == [str(i) for i in range(10)] and man.preprocessing.input_scale == 1 / 16
    assert man.source.sha256 and man.toolchain["tensorflow-cpu"] == "2.21.0"
    pruned = man.artifact("tflite-int8-pruned")
    # the search keeps a rung of the ladder and reaches it (tfmot rounds per layer to whole weights)
    assert pruned.extra["target_sparsity"] in (0.75, 0.5, 0.3) and pruned.extra["searched"]
    assert abs(pruned.sparsity - pruned.extra["target_sparsity"]) < 0.01
    assert pruned.extra["sparsity_search"][-1]["passed"]
    assert man.default_artifact == "tflite-int8"
    assert not [p for p in full_bundle.parent.iterdir() if p.name.endswith(".partial")]


def test_int8_is_under_30_percent_and_pruned_gzip_shrinks(full_bundle):
    man = er.read_manifest(full_bundle)
    fp32 = man.artifact("tflite-fp32").bytes
    assert man.artifact("tflite-int8").bytes <= 0.30 * fp32
    pruned = man.artifact("tflite-int8-pruned")
    # the raw file does not shrink (no EXPERIMENTAL_SPARSITY), the gzip size does: zeroed int8 weights compress
    # to almost nothing, so at sparsity s at least 0.4 s of the int8 file's gzip size goes (observed on resnet8:
    # 0.53 s at s = 0.5, 0.70 s at s = 0.75; the rest of the file is biases, scales and the graph)
    target = pruned.extra["target_sparsity"]
    assert pruned.gzip_bytes < (1 - 0.4 * target) * man.artifact("tflite-int8").gzip_bytes


def test_stored_check_outputs_reproduce_through_runtime(full_bundle):
    x = np.load(full_bundle / "check_inputs.npy")
    for a in er.read_manifest(full_bundle).artifacts:
        got = er.load(full_bundle, artifact=a.name).predict(x)
        np.testing.assert_array_equal(got, np.load(full_bundle / a.check_outputs))


def test_int8_runtime_equals_bare_litert_invoke(full_bundle):
    """The runtime's predict == the toolkit driving ai-edge-litert by hand on the same int8 artifact."""
    from ai_edge_litert.interpreter import Interpreter

    x = np.load(full_bundle.parent / "run" / "test.npz")["x_test"][:50]
    it = Interpreter(model_path=str(full_bundle / "tflite-int8.tflite"), num_threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s, zp = inp["quantization"]
    q = np.clip(np.rint(x * (np.float32(1) / np.float32(s))) + zp, -128, 127).astype(np.int8)
    it.resize_tensor_input(inp["index"], q.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], q)
    it.invoke()
    raw = it.get_tensor(out["index"])
    m = er.load(full_bundle, artifact="tflite-int8", num_threads=1)
    np.testing.assert_array_equal(m.predict_raw(q), raw)
    os_, ozp = out["quantization"]
    np.testing.assert_array_equal(m.predict(x), (raw.astype(np.float32) - ozp) * np.float32(os_))


def test_inspect_shows_ops_and_params(full_bundle, cli):
    code, out, _ = cli("inspect", full_bundle / "tflite-int8.tflite")
    assert code == 0 and "CONV_2D" in out and "int8" in out and "parameters" in out
    code, out, _ = cli("inspect", full_bundle / "onnx-int8.onnx", "--json")
    info = json.loads(out)
    assert code == 0 and info["format"] == "onnx" and "QuantizeLinear" in info["ops"]


def _convert_legacy_h5(tmp_path, cli, model, recipes="tflite-int8,onnx-fp32"):
    """Save tf_keras ``model`` as .h5, convert it through the CLI and check ONNX float32 against it; the manifest."""
    model.save(tmp_path / "legacy.h5")
    code, _, err = cli("convert", tmp_path / "legacy.h5", "--data", "digits", "--out", tmp_path / "b",
                       "--recipes", recipes, "--calibration", "64")
    assert code == 0, err
    x = np.load(tmp_path / "b" / "check_inputs.npy")
    # float32 ONNX of the same graph vs tf_keras itself: 1e-4 (the fp32 gate)
    np.testing.assert_allclose(er.load(tmp_path / "b", artifact="onnx-fp32").predict(x), model.predict(x, verbose=0),
                               atol=1e-4)
    return er.read_manifest(tmp_path / "b")


def test_legacy_h5_with_old_keys_loads_through_keras3(tmp_path, cli):
    """A tf.keras DepthwiseConv2D config carries the obsolete ``groups`` key; the Keras 3 path tolerates it."""
    import tf_keras as tfk

    tfk.utils.set_random_seed(0)
    m = tfk.Sequential([tfk.layers.Input((8, 8, 1)), tfk.layers.DepthwiseConv2D(3, padding="same"),
                        tfk.layers.Conv2D(8, 3), tfk.layers.ReLU(), tfk.layers.Flatten(),
                        tfk.layers.Dense(10, activation="softmax")])
    man = _convert_legacy_h5(tmp_path, cli, m, "tflite-int8,onnx-fp32,tflite-int8-qat")
    assert man.source.kind == "keras"


def test_legacy_h5_keras3_refuses_falls_back_to_tf_keras(tmp_path, cli):
    """ThresholdedReLU exists in tf.keras but was removed from Keras 3 ("Unknown layer"): only tf_keras loads it."""
    import keras
    import tf_keras as tfk

    tfk.utils.set_random_seed(0)
    m = tfk.Sequential([tfk.layers.Input((8, 8, 1)), tfk.layers.Conv2D(8, 3), tfk.layers.ThresholdedReLU(0.1),
                        tfk.layers.Flatten(), tfk.layers.Dense(10, activation="softmax")])
    m.save(tmp_path / "probe.h5")
    with pytest.raises(ValueError, match="Unknown layer: 'ThresholdedReLU'"):  # the premise: Keras 3 refuses it
        keras.saving.load_model(tmp_path / "probe.h5", compile=False)
    man = _convert_legacy_h5(tmp_path, cli, m)
    assert man.source.kind == "tf_keras"


def test_savedmodel_without_keras_metadata_converts(tmp_path, cli):
    import tensorflow as tf

    w = tf.Variable(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32))

    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
        def serve(self, x):
            return {"probs": tf.nn.softmax(tf.reshape(x, [-1, 64]) @ w)}

    mod = Plain()
    mod.w = w
    tf.saved_model.save(mod, str(tmp_path / "sm"), signatures={"serving_default": mod.serve})
    assert not (tmp_path / "sm" / "keras_metadata.pb").exists()
    code, _, err = cli("convert", tmp_path / "sm", "--data", "digits", "--out", tmp_path / "b",
                       "--recipes", "tflite-int8,onnx-fp32")
    assert code == 0, err
    x = np.load(tmp_path / "b" / "check_inputs.npy")
    ref = tf.nn.softmax(x.reshape(-1, 64) @ w.numpy()).numpy()
    np.testing.assert_allclose(er.load(tmp_path / "b", artifact="onnx-fp32").predict(x), ref, atol=1e-4)
    # a SavedModel has no Keras layers: the bridge recipes are refused with the ones that work
    code, _, err = cli("convert", tmp_path / "sm", "--data", "digits", "--out", tmp_path / "c",
                       "--recipes", "tflite-int8-qat")
    assert code == 2 and "cannot be pruned or fine-tuned" in err and "tflite-int8" in err


def test_unknown_recipe_hint(tmp_path, cli, trained_run):
    code, _, err = cli("convert", trained_run / "model.keras", "--out", tmp_path / "b", "--recipes", "tflite-int9")
    assert code == 2 and "Did you mean 'tflite-int8'" in err and not (tmp_path / "b").exists()


def test_unknown_recipe_option_rejected(tmp_path, cli, trained_run):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[convert]\nrecipes = ["tflite-int8-pruned"]\n[convert.options.tflite-int8-pruned]\nsparsty = 0.8\n')
    code, _, err = cli("convert", trained_run / "model.keras", "--out", tmp_path / "b", "--config", cfg)
    assert code == 2 and "Did you mean 'sparsity'" in err


def test_truncated_model_file(tmp_path, cli, trained_run):
    bad = tmp_path / "model.keras"
    bad.write_bytes((trained_run / "model.keras").read_bytes()[:5000])
    code, _, err = cli("convert", bad, "--data", str(trained_run), "--out", tmp_path / "b", "--recipes",
                       "tflite-fp32")
    assert code == 2 and "corrupt or truncated" in err and not (tmp_path / "b").exists()


def test_calibration_shape_mismatch(tmp_path, cli, trained_run):
    code, _, err = cli("convert", trained_run / "model.keras", "--data", "mnist", "--out", tmp_path / "b",
                       "--recipes", "tflite-int8")
    assert code == 2 and "calibration data has samples of shape (28, 28, 1)" in err and "(8, 8, 1)" in err


def test_multi_input_model_with_single_array_data_refused_clearly(tmp_path, cli):
    import keras

    a, b = keras.Input((4,), name="left"), keras.Input((4,), name="right")
    keras.Model([a, b], keras.layers.Add()([a, b])).save(tmp_path / "two.keras")
    code, _, err = cli("convert", tmp_path / "two.keras", "--data", "digits", "--out", tmp_path / "o",
                       "--recipes", "tflite-fp32")
    assert code == 2 and "several inputs (left, right)" in err and "one array per input" in err


def test_h5_lambda_refused_in_safe_mode(tmp_path, cli):
    import tf_keras as tfk

    m = tfk.Sequential([tfk.layers.Input((8, 8, 1)), tfk.layers.Lambda(lambda t: t * 2), tfk.layers.Flatten(),
                        tfk.layers.Dense(10)])
    m.save(tmp_path / "code.h5")
    code, _, err = cli("convert", tmp_path / "code.h5", "--data", "digits", "--out", tmp_path / "o",
                       "--recipes", "tflite-fp32")
    assert code == 2 and "Python code" in err and "--unsafe-load" in err


def test_unquantizable_op_named_with_recipes_that_work(tmp_path, cli):
    import keras

    inp = keras.Input((8, 8))
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.GRU(4)(inp))).save(tmp_path / "gru.keras")
    np.savez(tmp_path / "d.npz", x_train=np.random.default_rng(0).random((40, 8, 8), dtype=np.float32),
             y_train=np.arange(40) % 2)
    code, _, err = cli("convert", tmp_path / "gru.keras", "--data", tmp_path / "d.npz", "--out", tmp_path / "o",
                       "--recipes", "tflite-int8")
    assert code == 2 and "tf.TensorListReserve" in err and "tflite-fp32" in err
    assert not (tmp_path / "o").exists()


def test_existing_out_refused(tmp_path, cli, trained_run):
    (tmp_path / "b").mkdir()
    code, _, err = cli("convert", trained_run / "model.keras", "--out", tmp_path / "b")
    assert code == 2 and "--force" in err


def test_implicit_all_skips_recipes_that_do_not_apply(tmp_path):
    """tfmot's QAT has no Conv1D support: with the default 'all' the recipe is skipped, said and recorded."""
    import keras

    from edgeport.convert.pipeline import ConvertConfig, convert
    from edgeport.convert.recipes import Recipe, RecipePlan

    inp = keras.Input((16, 3))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(4, 3)(inp))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "c1d.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((60, 16, 3), dtype=np.float32), y_train=np.arange(60) % 2)
    said = []
    man = convert(ConvertConfig(model=str(tmp_path / "c1d.keras"), out=str(tmp_path / "b"), data=str(tmp_path / "d.npz"),
                                plan=RecipePlan.of([Recipe.TFLITE_INT8, Recipe.TFLITE_INT8_QAT], explicit=False)), progress=said.append)
    assert [a.name for a in man.artifacts] == ["tflite-int8"]
    assert "Conv1D" in man.skipped["tflite-int8-qat"] and any("warning: skipped tflite-int8-qat" in s for s in said)
    # named explicitly, the same recipe fails the run and writes nothing
    with pytest.raises(EdgeportError, match=r"(?s)^1 recipe\(s\) failed, nothing was written\. tflite-int8-qat: .*"
                       r"tfmot cannot quantize.*Conv1D.*Converted fine: none") as exc:
        convert(ConvertConfig(model=str(tmp_path / "c1d.keras"), out=str(tmp_path / "c"), data=str(tmp_path / "d.npz"),
                              plan=RecipePlan.of([Recipe.TFLITE_INT8_QAT], explicit=True)), progress=said.append)
    assert exc.type is EdgeportError  # a failed recipe, not bad input (which would be a subclass)
    assert not (tmp_path / "c").exists()
