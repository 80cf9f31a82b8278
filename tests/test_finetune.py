"""Fine-tuning plans and decisions (convert/finetune.py): schedule math, the sparsity ladder, the validation rule,
the small-data warning, and pre-TF-2.5 SavedModels loading as tf_keras layers. Fast: no fine-tuning runs here
(the end-to-end runs are in test_slow_finetune.py)."""
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from edgeport.convert import finetune as ft
from edgeport.convert.recipes import RECIPES, Recipe
from edgeport_runtime.errors import InputError, ModelLoadError

QAT = RECIPES[Recipe.TFLITE_INT8_QAT]
PRUNED = RECIPES[Recipe.TFLITE_INT8_PRUNED]


def test_plan_small_data_gets_the_step_floor():
    # 320 samples at batch 32 = 10 steps per epoch; 8 epochs would be 80 steps, the floor is 600
    s = ft.plan(320, dict(PRUNED.options), "prune")
    assert (s.steps_per_epoch, s.steps) == (10, 600)
    assert s.warmup_steps == 60  # 10% of 600
    # ramp over the first half, ending on a multiple of the mask update interval: 300 // 20 = 15 -> 300
    assert (s.prune_frequency, s.ramp_end_step) == (15, 300)
    assert ft.plan(320, dict(QAT.options), "qat").steps == 300


def test_plan_large_data_gets_its_epochs():
    s = ft.plan(4000, dict(PRUNED.options), "prune")  # 125 steps per epoch x 8 epochs
    assert s.steps == 1000 and s.ramp_end_step % s.prune_frequency == 0 and s.ramp_end_step <= 500


def test_plan_explicit_steps_win():
    s = ft.plan(320, dict(PRUNED.options, steps=101), "prune")
    assert s.steps == 101
    assert s.ramp_end_step == 50 and s.prune_frequency == 2  # 50 // 20 = 2; 50 is a multiple of 2


def test_plan_without_samples_refused():
    with pytest.raises(InputError, match="no samples left to fine-tune"):
        ft.plan(0, dict(QAT.options), "qat")


def test_lr_warms_up_then_decays_to_zero():
    s = ft.plan(320, dict(QAT.options, lr=1e-4), "qat")  # 300 steps, 30 warm-up
    lrs = [s.lr_at(i) for i in range(s.steps)]
    assert lrs[0] == pytest.approx(1e-4 / 30)  # hand computation: peak * 1 / warmup
    assert lrs[29] == pytest.approx(1e-4)  # the end of the warm-up reaches the peak
    assert all(a < b for a, b in zip(lrs[:29], lrs[1:30]))  # rising
    assert all(a >= b for a, b in zip(lrs[30:], lrs[31:]))  # then never rising
    # cosine: halfway through the decay the rate is half the peak
    assert s.lr_at(30 + 135) == pytest.approx(0.5e-4)
    assert s.lr_at(s.steps) == pytest.approx(0.0, abs=1e-12)


def test_pruning_best_weights_only_counted_at_full_sparsity():
    s = ft.plan(320, dict(PRUNED.options), "prune")
    # tfmot's last mask update happens in 0-based step ramp_end_step, i.e. after ramp_end_step + 1 completed
    assert not s.monitored(s.ramp_end_step) and s.monitored(s.ramp_end_step + 1)
    assert ft.plan(320, dict(QAT.options), "qat").monitored(1)


def test_sparsity_targets_ladder_unless_fixed():
    assert ft.sparsity_targets(PRUNED.options) == ([0.75, 0.5, 0.3], True)
    assert ft.sparsity_targets(dict(PRUNED.options, sparsity=0.6)) == ([0.6], False)


def test_ladder_keeps_the_highest_passing_sparsity():
    tried = []

    def attempt(s):
        tried.append(s)
        return {"target_sparsity": s, "passed": s <= 0.5}

    chosen, attempts = ft.ladder([0.75, 0.5, 0.3], attempt)
    assert chosen["target_sparsity"] == 0.5
    assert tried == [0.75, 0.5]  # 0.3 is not tried once 0.5 passed
    assert [a["passed"] for a in attempts] == [False, True]


def test_ladder_nothing_passes_returns_every_attempt():
    chosen, attempts = ft.ladder([0.75, 0.5, 0.3], lambda s: {"target_sparsity": s, "passed": False})
    assert chosen is None and [a["target_sparsity"] for a in attempts] == [0.75, 0.5, 0.3]


def _onehot(pred, k=3):
    out = np.full((len(pred), k), 0.1, np.float32)
    out[np.arange(len(pred)), pred] = 0.8
    return out


def test_judge_uses_the_gates_max_drop_on_the_point_estimate():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0] * 10)  # 100 samples
    keras = _onehot(y)  # Keras gets all 100 right
    art = y.copy()
    art[:1] = (y[:1] + 1) % 3  # one wrong: -1.00 pp, within 1.5
    r = ft.judge("classification", PRUNED.gate, y, keras, _onehot(art))
    assert r["delta_pp"] == -1.0 and r["passed"] and r["value"] == 0.99 and r["keras_value"] == 1.0
    art[:2] = (y[:2] + 1) % 3  # two wrong: -2.00 pp, beyond 1.5
    r = ft.judge("classification", PRUNED.gate, y, keras, _onehot(art))
    assert r["delta_pp"] == -2.0 and not r["passed"]


def test_judge_better_than_keras_never_fails():
    y = np.array([0, 1, 2] * 10)
    keras_pred = y.copy()
    keras_pred[:6] = (y[:6] + 1) % 3
    r = ft.judge("classification", PRUNED.gate, y, _onehot(keras_pred), _onehot(y))
    assert r["delta_pp"] == 20.0 and r["passed"]


def test_judge_autoencoder_uses_mse_ratio():
    x = np.zeros((4, 8), np.float32)
    keras = np.full((4, 8), 0.1, np.float32)  # MSE 0.01
    assert ft.judge("autoencoder", PRUNED.gate, x, keras, np.full((4, 8), 0.104, np.float32))["passed"]  # 1.08x
    assert not ft.judge("autoencoder", PRUNED.gate, x, keras, np.full((4, 8), 0.106, np.float32))["passed"]  # 1.12x


def test_not_achievable_message_lists_every_attempt():
    attempts = [{"target_sparsity": s, "metric": "accuracy", "value": v, "keras_value": 0.97,
                 "delta_pp": round(100 * (v - 0.97), 2), "gzip_bytes": g, "passed": False}
                for s, v, g in ((0.75, 0.80, 40960), (0.5, 0.93, 61440), (0.3, 0.95, 71680))]
    msg = ft.not_achievable(attempts, PRUNED.gate, 320)
    assert "not achievable with this data" in msg and "0.75, 0.5, 0.3" in msg and "320 samples" in msg
    assert "sparsity 0.75: accuracy 0.8000 vs Keras 0.9700 (-17.00 pp), gzip 40.0 KiB" in msg
    assert "sparsity 0.3: accuracy 0.9500 vs Keras 0.9700 (-2.00 pp), gzip 70.0 KiB" in msg
    assert "max drop 1.5 pp" in msg


def test_validation_split_carves_stratified_from_training_data():
    x = np.arange(500, dtype=np.float32).reshape(500, 1)
    y = np.arange(500) % 10
    xf, yf, xv, yv = ft.validation_split(x, y, None, None, seed=0)
    assert (len(xf), len(xv)) == (400, 100)
    assert np.bincount(yv).tolist() == [10] * 10  # stratified
    assert not set(xf.ravel()) & set(xv.ravel())  # disjoint
    # the data's own validation split is used as is
    vx, vy = np.zeros((30, 1), np.float32), np.zeros(30, int)
    assert ft.validation_split(x, y, vx, vy, 0)[2] is vx


def test_validation_split_too_few_samples_refused():
    with pytest.raises(InputError, match="too few to fine-tune with early stopping"):
        ft.validation_split(np.zeros((15, 1)), np.zeros(15, int), None, None, 0)


def test_small_data_warning_states_samples_steps_and_sparsity():
    w = ft.small_data_warning("tflite-int8-pruned", "prune", 500, None, dict(PRUNED.options))
    # 500 -> 100 held for early stopping, 400 fit: 600 steps x 32 / 400 = 48 repeats
    assert "fine-tuning on 400 labelled samples (100 more held for early stopping)" in w
    assert "600 optimizer steps of 32 repeat each sample ~48 times" in w
    assert "removing 75% of the weights (then less, down to 30%, if that fails)" in w
    w = ft.small_data_warning("tflite-int8-pruned", "prune", 500, 200, dict(PRUNED.options, sparsity=0.6))
    assert "on 500 labelled samples:" in w and "removing 60% of the weights;" in w
    w = ft.small_data_warning("tflite-int8-qat", "qat", 400, None, dict(QAT.options))
    assert "320 labelled samples" in w and "300 optimizer steps" in w and "int8 fake quantization" in w


def test_small_data_warning_silent_with_enough_data():
    assert ft.small_data_warning("tflite-int8-pruned", "prune", 3600, None, dict(PRUNED.options)) is None
    assert ft.small_data_warning("tflite-int8-qat", "qat", 500, None, dict(QAT.options)) is None


def test_convert_warns_before_fine_tuning_on_small_data():
    from edgeport.convert.pipeline import fine_tune_warnings
    from edgeport.convert.recipes import plan_recipes

    data = SimpleNamespace(x_train=np.zeros((500, 4)), x_val=None)
    jobs = plan_recipes("tflite-int8,tflite-int8-qat,tflite-int8-pruned").jobs
    lines = fine_tune_warnings(jobs, data)
    assert len(lines) == 1 and lines[0].startswith("tflite-int8-pruned: fine-tuning on 400 labelled samples")
    data.x_train = np.zeros((400, 4))
    assert [ln.split(":")[0] for ln in fine_tune_warnings(jobs, data)] == ["tflite-int8-qat", "tflite-int8-pruned"]


# --- pre-TF-2.5 SavedModels (no keras_metadata.pb; the Keras configs sit in saved_model.pb's object graph) ---

def make_legacy_saved_model(model, path):
    """Save tf_keras ``model`` the way tf.keras did before TF 2.5: Keras metadata moved into the object graph
    nodes of saved_model.pb (SavedUserObject.metadata) and no keras_metadata.pb."""
    import tf_keras
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    tf_keras.models.save_model(model, str(path), save_format="tf")
    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString((path / "keras_metadata.pb").read_bytes())
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((path / "saved_model.pb").read_bytes())
    nodes = sm.meta_graphs[0].object_graph_def.nodes
    for n in meta.nodes:
        nodes[n.node_id].user_object.metadata = n.metadata
    (path / "saved_model.pb").write_bytes(sm.SerializeToString())
    os.remove(path / "keras_metadata.pb")
    return path


def _tiny_tf_keras(lambda_layer=False):
    import tf_keras as tfk

    tfk.utils.set_random_seed(0)
    layers = [tfk.Input((8, 8, 1)), tfk.layers.Conv2D(4, 3), tfk.layers.BatchNormalization(),
              tfk.layers.ReLU()]
    if lambda_layer:
        layers.append(tfk.layers.Lambda(lambda t: t * 2.0))
    layers += [tfk.layers.Flatten(), tfk.layers.Dense(3, activation="softmax")]
    return tfk.Sequential(layers)


def test_legacy_saved_model_loads_as_tf_keras_layers(tmp_path):
    from edgeport.convert.source import load_source

    model = _tiny_tf_keras()
    path = make_legacy_saved_model(model, tmp_path / "legacy")
    assert not (path / "keras_metadata.pb").exists()
    src = load_source(path)
    assert src.kind == "tf_keras"  # layers, so the bridge (QAT, pruning) applies
    assert [type(layer).__name__ for layer in src.model.layers] == ["Conv2D", "BatchNormalization", "ReLU",
                                                                     "Flatten", "Dense"]
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(src.predict(x), np.asarray(model(x)), rtol=0, atol=1e-6)  # float32 rounding


def test_legacy_saved_model_with_lambda_refused_in_safe_mode(tmp_path):
    from edgeport.convert.source import load_source

    path = make_legacy_saved_model(_tiny_tf_keras(lambda_layer=True), tmp_path / "legacy")
    with pytest.raises(ModelLoadError, match="Lambda.*safe mode refuses"):
        load_source(path)


def test_plain_saved_model_without_keras_objects_stays_plain(tmp_path):
    import tensorflow as tf

    from edgeport.convert.source import load_source

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"y": tf.nn.softmax(x)}

    m = M()
    tf.saved_model.save(m, str(tmp_path / "plain"), signatures={"serving_default": m.serve})
    src = load_source(tmp_path / "plain")
    assert src.kind == "saved_model"
    got = src.predict(np.array([[0.0, 0.0, 0.0, math.log(2.0)]], np.float32))
    np.testing.assert_allclose(got, [[0.2, 0.2, 0.2, 0.4]], rtol=1e-6)  # hand computation: e^0 x3 + 2 = 5



def test_advice_after_step_schedules_names_steps_not_epochs():
    from edgeport.check.diagnose import _pruned_advice, _qat_advice

    extra = {"target_sparsity": 0.5, "pqat": False,
             "fine_tune": {"epochs": 8, "schedule": {"steps": 600}}}
    fixes = _pruned_advice(extra)
    # with 10 steps per epoch the 600-step floor decides: epochs = 16 would change nothing
    assert any("steps = 1200" in f and "now 600" in f for f in fixes)
    assert not any("epochs" in f for f in fixes)
    assert any("steps = 600 " in f for f in _qat_advice({"fine_tune": {"lr": 1e-4, "schedule": {"steps": 300}}}))


def test_report_lists_every_sparsity_attempt_and_skipped_recipes():
    from edgeport.check.report import fine_tune_lines

    search = [{"target_sparsity": 0.75, "sparsity": 0.7498, "value": 0.9625, "keras_value": 0.9875,
               "delta_pp": -2.5, "gzip_bytes": 38912, "passed": False},
              {"target_sparsity": 0.5, "sparsity": 0.5, "value": 0.9875, "keras_value": 0.9875, "delta_pp": 0.0,
               "gzip_bytes": 59392, "passed": True}]
    rep = {"artifacts": [{"name": "tflite-int8-pruned", "sparsity": 0.5, "sparsity_search": search,
                          "fine_tune_warnings": ["w1"]}],
           "skipped": {"tflite-int8-qat": "not achievable with this data: ..."}}
    md = "\n".join(fine_tune_lines(rep))
    assert "highest passing kept: 50%" in md
    assert "| 0.75 | 75.0% | 0.9625 | 0.9875 | -2.50 | 38.0 KiB | no |" in md
    assert "| 0.5 | 50.0% | 0.9875 | 0.9875 | +0.00 | 58.0 KiB | yes |" in md
    assert "- tflite-int8-pruned: warning: w1" in md
    assert "- tflite-int8-qat: not in the bundle: not achievable with this data" in md
