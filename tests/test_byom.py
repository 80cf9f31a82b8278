"""Bring your own model: a model trained outside edgeport, converted with sample data that has no labels.

The model is a MobileNetV1-style depthwise-separable CNN (width 0.25) trained here in tf_keras on generated
stripe images and saved as a legacy .h5, the way an older project would hand it over.
"""
import json

import numpy as np
import pytest
from PIL import Image

import edgeport_runtime as er

SIZE = 24
CLASSES = 3


def stripe_images(n, seed):
    """uint8 images, class 0 horizontal stripes, 1 vertical, 2 diagonal; random period, phase, contrast, noise.

    Returned sorted by class (a class-sorted file is what calibration must not take the first N of).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    xs, ys = [], []
    for c in range(CLASSES):
        for _ in range(n // CLASSES):
            period, phase = rng.uniform(4, 8), rng.uniform(0, 2 * np.pi)
            coord = {0: yy, 1: xx, 2: (xx + yy) / np.sqrt(2)}[c]
            img = 0.5 + rng.uniform(0.25, 0.5) * np.sin(2 * np.pi * coord / period + phase)
            img = img + rng.normal(0, 0.08, img.shape)
            xs.append(np.clip(img * 255, 0, 255).astype(np.uint8)[..., None])
            ys.append(c)
    return np.stack(xs), np.asarray(ys, np.int64)


def mobilenet_v1(alpha=0.25):
    """MobileNetV1 blocks at width ``alpha``: conv, then depthwise 3x3 + pointwise 1x1, BatchNorm and ReLU6."""
    import tf_keras as tfk

    L = tfk.layers

    def f(n):
        return max(8, int(n * alpha))

    inp = L.Input((SIZE, SIZE, 1))
    h = L.Conv2D(f(32), 3, strides=2, padding="same", use_bias=False)(inp)
    h = L.ReLU(6.0)(L.BatchNormalization()(h))
    for filters, stride in ((64, 1), (128, 2), (128, 1)):
        h = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization()(h))
        h = L.Conv2D(f(filters), 1, use_bias=False)(h)
        h = L.ReLU(6.0)(L.BatchNormalization()(h))
    h = L.GlobalAveragePooling2D()(h)
    return tfk.Model(inp, L.Dense(CLASSES, activation="softmax")(h))


@pytest.fixture(scope="module")
def byom(tmp_path_factory):
    """The .h5 model, its (class-sorted) training images and a labelled evaluation set."""
    import tf_keras as tfk

    d = tmp_path_factory.mktemp("byom")
    x, y = stripe_images(600, seed=1)
    tfk.utils.set_random_seed(0)
    m = mobilenet_v1()
    m.compile(tfk.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x / 255.0, y, epochs=6, batch_size=32, verbose=0, shuffle=True)
    m.save(d / "mobilenet.h5")
    xe, ye = stripe_images(300, seed=2)
    return {"dir": d, "model": m, "h5": d / "mobilenet.h5", "x": x, "y": y, "x_eval": xe, "y_eval": ye}


def _parity(cli, bundle, *extra):
    code, out, err = cli("parity", bundle, "--no-diagnose", *extra)
    return code, out, err, json.loads((bundle / "parity.json").read_text())


def test_convert_unlabeled_class_sorted_npy_passes_int8_parity(byom, cli):
    d = byom["dir"]
    np.save(d / "calib.npy", byom["x"])  # class-sorted: the first 200 samples are all horizontal stripes
    out = d / "npy_bundle"
    code, stdout, err = cli("convert", byom["h5"], "--data", d / "calib.npy", "--input-scale", str(1 / 255),
                            "--out", out, "--recipes", "tflite-fp32,tflite-int8", "--calibration", "200")
    assert code == 0, err
    man = er.read_manifest(out)
    assert man.preprocessing.input_scale == pytest.approx(1 / 255)
    assert man.source.data.labelled is False and man.calibration.stratified is False
    assert man.artifact("tflite-int8").inputs[0].dtype == "int8"
    code, stdout, err, rep = _parity(cli, out)
    assert code == 0, stdout + err
    assert rep["accuracy_measured"] is False and "accuracy not measured" in stdout.lower()
    int8 = next(a for a in rep["artifacts"] if a["name"] == "tflite-int8")
    assert int8["metric"] == "agreement" and int8["delta_pp"] is None and int8["outcome"] == "pass"
    assert rep["samples"] == 120  # 20% of the 600 held back
    # independently of parity's split: int8 top-1 agrees with tf_keras itself on all 600 images (the gate's 97%)
    x = byom["x"].astype(np.float32) / 255.0
    with er.load(out, artifact="tflite-int8") as m:
        agree = np.mean(m.predict(x).argmax(1) == byom["model"].predict(x, verbose=0).argmax(1))
    assert agree >= 0.97


def test_convert_with_eval_measures_accuracy_on_it(byom, cli):
    d = byom["dir"]
    np.savez(d / "eval.npz", x_test=byom["x_eval"], y_test=byom["y_eval"])
    np.savez(d / "xonly.npz", x_train=byom["x"])
    out = d / "eval_bundle"
    code, _, err = cli("convert", byom["h5"], "--data", d / "xonly.npz", "--eval", d / "eval.npz",
                       "--input-scale", str(1 / 255), "--out", out, "--recipes", "tflite-int8")
    assert code == 0, err
    code, stdout, err, rep = _parity(cli, out)
    assert code == 0, stdout + err
    assert rep["accuracy_measured"] is True and rep["samples"] == 300
    # the Keras accuracy parity reports is the tf_keras model's own accuracy on the eval set
    want = float((byom["model"].predict(byom["x_eval"] / 255.0, verbose=0).argmax(1) == byom["y_eval"]).mean())
    assert rep["keras"]["metric"] == "accuracy" and rep["keras"]["value"] == pytest.approx(want, abs=1e-9)
    int8 = rep["artifacts"][0]
    assert int8["delta_pp"] is not None and int8["outcome"] == "pass"


def test_convert_unlabeled_image_folder_records_preprocessing(byom, cli):
    d = byom["dir"]
    folder = d / "images"
    folder.mkdir()
    for i, img in enumerate(byom["x"][::5]):  # 120 images straight in the folder: no class subfolders
        Image.fromarray(img[..., 0]).save(folder / f"img{i:03d}.png")
    out = d / "img_bundle"
    code, _, err = cli("convert", byom["h5"], "--data", folder, "--out", out, "--recipes", "tflite-fp32")
    assert code == 0, err
    man = er.read_manifest(out)
    # image size and channels came from the model; 8-bit pixels scaled to [0, 1] by default
    assert man.preprocessing.image_size == [SIZE, SIZE] and man.preprocessing.color == "grayscale"
    assert man.preprocessing.input_scale == pytest.approx(1 / 255)
    assert man.calibration.count == 96  # 80% of 120: the other 24 are held back for parity
    x = np.load(out / "check_inputs.npy")
    # the stored check inputs are the PNG pixels / 255 (PNG is lossless)
    originals = byom["x"][::5].reshape(120, -1).astype(np.float32) / 255.0
    for row in x.reshape(len(x), -1):
        assert np.min(np.abs(originals - row).max(axis=1)) < 1e-6


def test_convert_named_fine_tuning_recipe_without_labels_exits_2(byom, cli):
    d = byom["dir"]
    np.save(d / "calib2.npy", byom["x"][:50].astype(np.float32) / 255)
    code, _, err = cli("convert", byom["h5"], "--data", d / "calib2.npy", "--out", d / "ft",
                       "--recipes", "tflite-int8-qat")
    assert code == 2 and "needs labels" in err and "tflite-int8-qat" in err


def test_convert_csv_without_labels_regression_gates_output_error_ratio(tmp_path, cli):
    """A regression model and a CSV of raw feature rows without a label column (the last column is continuous)."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (400, 4)).astype(np.float32)
    target = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32))[:, None]
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    m = keras.Model(inp, keras.layers.Dense(1)(keras.layers.Dense(16, activation="relu")(inp)))
    m.compile("adam", "mse")
    m.fit(x, target, epochs=20, verbose=0)
    m.save(tmp_path / "reg.keras")
    (tmp_path / "rows.csv").write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in x))
    code, _, err = cli("convert", tmp_path / "reg.keras", "--data", tmp_path / "rows.csv", "--task", "regression",
                       "--out", tmp_path / "b", "--recipes", "tflite-int8")
    assert code == 0, err
    man = er.read_manifest(tmp_path / "b")
    assert man.task == "regression" and man.preprocessing.features == ["a", "b", "c", "d"]
    code, stdout, err, rep = _parity(cli, tmp_path / "b")
    assert code == 0, stdout + err
    row = rep["artifacts"][0]
    assert row["metric"] == "output_error_ratio" and row["agreement"] is None and rep["samples"] == 80
    # the ratio recomputed by hand from Keras and the runtime on the bundle's 8 stored check inputs (a subset of
    # the 80): int8 of a 2-layer MLP stays far under the 0.10 gate, so 0.10 bounds the subset too
    xc = np.load(tmp_path / "b" / "check_inputs.npy")
    ref = m.predict(xc, verbose=0)
    got = er.load(tmp_path / "b").predict(xc)
    assert np.sqrt(np.mean((got - ref) ** 2)) / np.std(ref) < 0.10
