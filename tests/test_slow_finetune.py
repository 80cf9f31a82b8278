"""Fine-tuning a converged model with little labelled data (make test-slow): the situation of someone who downloads
a trained model and has a few hundred labelled samples. The pruned recipe must pass its gate at the sparsity its
search chose, and QAT must stay within 0.5 pp of Keras, for a Keras 3 model and for a tf_keras model trained on
raw 0..255 pixels and saved as a pre-TF-2.5 SavedModel.

The 500 labelled samples given as --data come from the training run's test split (the model never saw them, as
with a user's own data); the run's other 500 test samples are the held-out split parity judges on.
"""
import json

import numpy as np
import pytest

from edgeport.data.split import stratified_split
from test_finetune import make_legacy_saved_model

pytestmark = pytest.mark.slow

RECIPES = "tflite-int8,tflite-int8-qat,tflite-int8-pruned"


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    """resnet8 trained to convergence (early stopping) on mnist, all 5,000 samples split by `edgeport train`."""
    from edgeport.cli import main

    run = tmp_path_factory.mktemp("finetune") / "run"
    assert main(["train", "--dataset", "mnist", "--model", "resnet8", "--epochs", "40", "--quiet",
                 "--out", str(run)]) == 0
    return run


def _small_data(run, path, scale=1.0):
    """--data: 500 labelled samples the model never saw (x_train) and 500 more as the held-out split (x_test)."""
    te = np.load(run / "test.npz")
    xa, xb, ya, yb = stratified_split(te["x_test"], te["y_test"], 0.5, 0)
    np.savez(path, x_train=xa * scale, y_train=ya, x_test=xb * scale, y_test=yb)
    assert len(xa) == 500 and len(xb) == 500
    return path


def _convert_and_check(cli, model, data, bundle):
    code, out, err = cli("convert", model, "--data", data, "--recipes", RECIPES, "--jobs", "2", "--out", bundle)
    assert code == 0, err
    # the small-data warning comes before fine-tuning and states the numbers
    assert "warning: tflite-int8-pruned: fine-tuning on 400 labelled samples (100 more held for early " \
           "stopping): 600 optimizer steps" in out
    man = json.loads((bundle / "manifest.json").read_text())
    arts = {a["name"]: a for a in man["artifacts"]}
    pruned = arts["tflite-int8-pruned"]["extra"]
    tried = pruned["sparsity_search"]
    assert pruned["searched"] and [a["target_sparsity"] for a in tried] == [0.75, 0.5, 0.3][:len(tried)]
    assert tried[-1]["passed"] and not any(a["passed"] for a in tried[:-1])  # the highest that passes is kept
    for a in tried:
        assert a["gzip_bytes"] > 0 and 0 <= a["value"] <= 1 and abs(a["sparsity"] - a["target_sparsity"]) < 0.01
    assert pruned["target_sparsity"] == tried[-1]["target_sparsity"]
    assert man["default_artifact"] == "tflite-int8"

    code, out, err = cli("parity", bundle, "--json")
    rep = json.loads(out)
    assert rep["samples"] == 500
    par = {a["name"]: a for a in rep["artifacts"] if a["backend"] == "litert"}
    # passes its gate (bounds within the threshold), not merely "not failed"
    assert par["tflite-int8-pruned"]["outcome"] == "pass", par["tflite-int8-pruned"]["checks"]
    # QAT within 0.5 pp of Keras on the 500 held-out samples (being better is fine)
    assert par["tflite-int8-qat"]["delta_pp"] >= -0.5, par["tflite-int8-qat"]
    assert code == 0, err
    return man, par


def test_converged_keras_model_small_data_pruned_passes_and_qat_holds(tmp_path, cli, mnist_run):
    data = _small_data(mnist_run, tmp_path / "d500.npz")
    man, _ = _convert_and_check(cli, mnist_run / "model.keras", data, tmp_path / "bundle")
    assert man["source"]["kind"] == "keras"


@pytest.fixture(scope="session")
def raw_pixel_legacy_saved_model(mnist_run, tmp_path_factory):
    """resnet8 trained in tf_keras on raw 0..255 pixels (same splits as mnist_run), saved as a pre-TF-2.5
    SavedModel (no keras_metadata.pb)."""
    import tf_keras

    from edgeport.train.zoo import build_model

    tr = np.load(mnist_run / "train.npz")
    tf_keras.utils.set_random_seed(0)
    model = build_model("resnet8", (28, 28, 1), 10, k=tf_keras)
    model.compile(tf_keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = tf_keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    model.fit(tr["x_train"] * 255.0, tr["y_train"], validation_data=(tr["x_val"] * 255.0, tr["y_val"]),
              epochs=40, batch_size=32, callbacks=[stop], verbose=0)
    return make_legacy_saved_model(model, tmp_path_factory.mktemp("legacy") / "saved_model")


def test_legacy_saved_model_raw_pixels_small_data_pruned_passes_and_qat_holds(tmp_path, cli, mnist_run,
                                                                               raw_pixel_legacy_saved_model):
    data = _small_data(mnist_run, tmp_path / "d500_raw.npz", scale=255.0)
    man, par = _convert_and_check(cli, raw_pixel_legacy_saved_model, data, tmp_path / "bundle")
    assert man["source"]["kind"] == "tf_keras" and not man.get("skipped")  # QAT and pruning applied
    # it really is a converged raw-pixel model: the Keras 3 run scores 0.962 on the same 500 samples, this one 0.948
    assert par["tflite-int8"]["keras_value"] >= 0.93
