"""A two-input, two-output functional model: converted with every post-training recipe, run through
edgeport_runtime with lists and dicts, gated by parity on every output."""
import json

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport_runtime.errors import InputError

POST_TRAINING = "tflite-fp32,tflite-fp16,tflite-dynamic,tflite-int8,onnx-fp32,onnx-int8"


def two_heads_data(n, seed):
    """image (8x8x1) + meta (3 values): the class is the brightest image quadrant row; the score is meta's sum."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    img = rng.normal(0.2, 0.05, (n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(y):
        img[i, c * 2:c * 2 + 3] += 0.6
    meta = rng.normal(0, 1, (n, 3)).astype(np.float32)
    return img, meta, y


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("multi")
    keras.utils.set_random_seed(0)
    image, meta = keras.Input((8, 8, 1), name="image"), keras.Input((3,), name="meta")
    h = keras.layers.Conv2D(8, 3, activation="relu")(image)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Concatenate()([h, keras.layers.Dense(8, activation="relu")(meta)])
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    score = keras.layers.Dense(1, name="score")(keras.layers.Dense(8, activation="relu")(meta))
    m = keras.Model([image, meta], [cls, score])
    m.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    img, met, y = two_heads_data(600, 0)
    m.fit([img, met], [y, met.sum(1, keepdims=True)], epochs=15, batch_size=32, verbose=0)
    m.save(d / "two.keras")
    np.savez(d / "data.npz", image=img, meta=met, y=y)
    return {"dir": d, "model": m, "path": d / "two.keras"}


def test_two_input_two_output_model_converts_runs_and_passes_parity(two_heads, cli):
    d = two_heads["dir"]
    out = d / "bundle"
    code, _, err = cli("convert", two_heads["path"], "--data", d / "data.npz", "--out", out, "--recipes",
                       POST_TRAINING, "--label-output", "cls", "--calibration", "200")
    assert code == 0, err
    man = er.read_manifest(out)
    assert [a.recipe for a in man.artifacts] == POST_TRAINING.split(",")
    for a in man.artifacts:  # every tensor listed, in the Keras model's order and under its names
        assert [t.name for t in a.inputs] == ["image", "meta"], a.name
        assert [t.shape[1:] for t in a.inputs] == [[8, 8, 1], [3]]
        assert [t.name for t in a.outputs] == ["cls", "score"] and [t.shape[1:] for t in a.outputs] == [[3], [1]]
    img, met, _ = two_heads_data(50, 1)
    want = two_heads["model"].predict([img, met], verbose=0)
    for name in ("tflite-fp32", "onnx-fp32"):
        with er.load(out, artifact=name) as m:
            as_list = m.predict([img, met])
            as_dict = m.predict({"meta": met, "image": img})
        # float32 exports: the fp32 gate's 1e-4 (same arithmetic, other kernels)
        for got, ref in zip(as_list, want):
            np.testing.assert_allclose(got, ref, atol=1e-4)
        assert set(as_dict) == {"cls", "score"}
        np.testing.assert_array_equal(as_dict["score"], as_list[1])
    with er.load(out, artifact="tflite-int8") as m:
        cls, score = m.predict([img, met])
        assert m.inputs[0].dtype == "int8" and cls.shape == (50, 3) and score.shape == (50, 1)
        with pytest.raises(InputError, match="unknown input name.*'pic'.*image, meta"):
            m.predict({"pic": img, "meta": met})
    code, stdout, err = cli("parity", out, "--no-diagnose")
    assert code == 0, stdout + err
    rep = json.loads((out / "parity.json").read_text())
    rows = {(a["name"], a["output"]): a for a in rep["artifacts"] if a["backend"] in ("litert", "onnxruntime")}
    for name in POST_TRAINING.split(","):
        assert rows[(name, "cls")]["metric"] == "accuracy" and rows[(name, "cls")]["delta_pp"] is not None
        assert rows[(name, "score")]["metric"] == "output_error_ratio"
        assert rows[(name, "cls")]["outcome"] != "fail" and rows[(name, "score")]["outcome"] == "pass"
    assert rep["keras"]["metric"] == "accuracy" and rep["samples"] == 120


def test_several_inputs_need_an_npz_per_input(two_heads, cli, tmp_path):
    np.savez(tmp_path / "bad.npz", image=np.zeros((10, 8, 8, 1), np.float32))
    code, _, err = cli("convert", two_heads["path"], "--data", tmp_path / "bad.npz", "--out", tmp_path / "o",
                       "--recipes", "tflite-fp32")
    assert code == 2 and "no array for input 'meta'" in err
