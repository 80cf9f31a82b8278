"""The parity gate end to end (train briefly -> convert all recipes -> parity), and a broken artifact caught."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport.check.report import REPORT_KEYS


@pytest.fixture(scope="module")
def parity_run(full_bundle):
    import contextlib
    import io

    from edgeport.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["parity", str(full_bundle), "--json"])
    return code, out.getvalue(), err.getvalue()


def test_default_pipeline_passes_every_gate(parity_run, full_bundle):
    code, out, err = parity_run
    rep = json.loads(out)
    assert code == 0, err
    assert rep["passed"] and rep["samples"] == 360  # the whole held-out split, not a sample
    names = {a["name"] for a in rep["artifacts"]}
    assert names == {a.name for a in er.read_manifest(full_bundle).artifacts}
    int8 = next(a for a in rep["artifacts"] if a["name"] == "tflite-int8")
    assert int8["agreement"] >= 0.97 and int8["delta_pp"] >= -1.0 and int8["max_diff_output_steps"] is not None
    assert set(int8["per_class_delta_pp"]) == {str(i) for i in range(10)}


def test_parity_results_recorded_in_manifest(parity_run, full_bundle):
    man = er.read_manifest(full_bundle)
    assert man.artifact("onnx-fp32").parity["onnxruntime"]["passed"] is True
    assert (full_bundle / "parity.json").is_file()


def test_bench_and_report_write_documented_keys(parity_run, full_bundle, cli):
    code, _, err = cli("bench", full_bundle, "--runs", "20")
    assert code == 0, err
    code, out, err = cli("report", full_bundle)
    assert code == 0, err
    rep = json.loads((full_bundle / "report.json").read_text())
    assert {"accuracy", "params", "macs"} <= set(rep["keras"])
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(k in readme for k in REPORT_KEYS)  # the stable keys are the documented ones
    for row in rep["artifacts"]:
        assert list(row)[:len(REPORT_KEYS)] == list(REPORT_KEYS)
        assert row["gate"] == "pass" and row["latency_ms_p50"] > 0 and row["rss_mb"] > 0
    assert (full_bundle / "report.png").stat().st_size > 1000 and "| tflite-int8 |" in out


def test_wrong_calibration_is_caught_with_diagnosis(tmp_path, trained_run, cli):
    """Calibrating on inputs 50x too small saturates the int8 input: the gate must fail and say why."""
    tr = np.load(trained_run / "train.npz")
    np.savez(tmp_path / "bad_calib.npz", x_train=tr["x_train"] * 0.02, y_train=tr["y_train"])
    code, _, err = cli("convert", trained_run / "model.keras", "--data", tmp_path / "bad_calib.npz",
                       "--out", tmp_path / "b", "--recipes", "tflite-int8,onnx-fp32")
    assert code == 0, err
    code, out, err = cli("parity", tmp_path / "b", "--data", trained_run)
    assert code == 1  # a failed gate, not bad input
    assert "tflite-int8 [litert]" in err and "accuracy drop" in err and "agreement" in err
    assert "onnx-fp32" not in err  # only the broken artifact is listed
    assert "outside the calibrated input range" in out and "worst layer:" in out, out


def test_gate_override_from_config(tmp_path, full_bundle, cli):
    # on a copy: a failing parity run records its failed gate in the bundle, and later tests report on full_bundle
    bundle = tmp_path / "bundle"
    shutil.copytree(full_bundle, bundle)
    cfg = tmp_path / "g.toml"
    cfg.write_text("[parity.gates.tflite-int8]\nmax_abs_diff = 1e-9\n")  # int8 outputs move by steps: must fail
    code, _, err = cli("parity", bundle, "--config", cfg, "--no-diagnose")
    assert code == 1 and "tflite-int8 [litert]: max |diff|" in err
    cfg.write_text("[parity.gates.tflite-int8]\nmin_agreement = 97\n")  # a percentage where a fraction belongs
    code, _, err = cli("parity", bundle, "--config", cfg)
    assert code == 2 and "min_agreement = 97 is outside [0, 1]" in err
    cfg.write_text("[parity.gates.tflite-int9]\nmin_agreement = 0.9\n")
    code, _, err = cli("parity", bundle, "--config", cfg)
    assert code == 2 and "Did you mean 'tflite-int8'" in err


def test_pruned_advice_never_repeats_what_the_config_sets():
    """The README's TOML example sets sparsity 0.8, epochs 10, pqat = true: pqat must not be suggested again."""
    from edgeport.check.diagnose import NOTHING_APPLIES, _pruned_advice

    fixes = _pruned_advice({"target_sparsity": 0.8, "pqat": True, "fine_tune": {"epochs": 10}})
    assert not any("pqat" in f for f in fixes)
    assert any("sparsity = 0.5" in f and "now 0.8" in f for f in fixes)
    assert _pruned_advice({"target_sparsity": 0.5, "pqat": True, "fine_tune": {"epochs": 16}}) == [NOTHING_APPLIES]


def test_qat_advice_never_suggests_the_qat_recipe():
    from edgeport.check.diagnose import NOTHING_APPLIES, _qat_advice

    fixes = _qat_advice({"fine_tune": {"epochs": 3, "lr": 1e-4}})
    assert fixes and not any("tflite-int8-qat recipe" in f for f in fixes)
    assert any("epochs = 10" in f for f in fixes)
    assert _qat_advice({"fine_tune": {"epochs": 20, "lr": 1e-6}}) == [NOTHING_APPLIES]


def test_iris_csv_small_split_has_no_false_failure(tmp_path, cli):
    """iris (30 held-out samples, one sample = 3.3 pp): a QAT artifact one sample away from Keras is not a
    failure; the gate either passes or says the split is too small, and exits 0."""
    import re

    import pandas as pd
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    df = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df.to_csv(tmp_path / "iris.csv", index=False)
    assert isinstance(df, pd.DataFrame) and len(df) == 150
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    code, _, err = cli("train", "--dataset", tmp_path / "iris.csv", "--model", "mlp", "--quiet", "--out", run)
    assert code == 0, err
    code, _, err = cli("convert", run / "model.keras", "--out", bundle, "--recipes", "tflite-int8,tflite-int8-qat")
    assert code == 0, err
    code, out, err = cli("parity", bundle)
    assert code == 0, err
    counts = re.search(r"parity: (\d+) passed, (\d+) failed, (\d+) inconclusive", out)
    assert counts and counts.group(2) == "0", out
    code, _, err = cli("parity", bundle, "--strict")  # --strict turns an inconclusive gate into exit 1
    assert code == (1 if counts.group(3) != "0" else 0), err


def test_readme_toml_example_has_no_false_failure(tmp_path, trained_run, cli):
    """The README's [convert] example (pqat = true) passes or is inconclusive, and never advises pqat again."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    toml = re.search(r"```toml\n(\[convert\].*?)```", readme, re.S).group(1)
    (tmp_path / "c.toml").write_text(toml)
    bundle = tmp_path / "b"
    code, _, err = cli("convert", trained_run / "model.keras", "--out", bundle, "--config", tmp_path / "c.toml")
    assert code == 0, err
    code, out, err = cli("parity", bundle, "--config", tmp_path / "c.toml")
    assert code == 0, out + err
    assert "pqat = true" not in out


def test_h5_converted_with_data_name_reuses_its_split(tmp_path, trained_run, cli):
    """A legacy .h5 outside any run, converted with --data digits: parity re-creates that held-out split itself."""
    import keras

    keras.saving.load_model(trained_run / "model.keras").save(tmp_path / "legacy.h5")
    code, _, err = cli("convert", tmp_path / "legacy.h5", "--data", "digits", "--out", tmp_path / "b",
                       "--recipes", "tflite-fp32")
    assert code == 0, err
    src = er.read_manifest(tmp_path / "b").source
    assert src.data.data == "digits" and src.data.seed == 0 and src.run_dir is None
    code, out, err = cli("parity", tmp_path / "b", "--json")
    assert code == 0, err
    # digits has 1,797 samples; the stratified 20% split holds 360 (the same count `edgeport train` holds out)
    assert json.loads(out)["samples"] == 360


def test_nan_weights_fail_the_gate_end_to_end(tmp_path, cli):
    """A model with NaN weights converts; parity must fail (exit 1) saying the outputs are NaN, not print nan."""
    import keras

    from conftest import make_npz

    inp = keras.Input((8, 8, 1))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    w, b = model.layers[-1].get_weights()
    w[0, 0] = np.nan
    model.layers[-1].set_weights([w, b])
    model.save(tmp_path / "nan.keras")
    data = make_npz(tmp_path / "d.npz", n=90)
    code, _, err = cli("convert", tmp_path / "nan.keras", "--data", data, "--out", tmp_path / "b",
                       "--recipes", "tflite-fp32")
    assert code == 0, err
    code, out, err = cli("parity", tmp_path / "b")  # the recorded --data .npz re-creates the split
    assert code == 1, out + err
    assert "outputs NaN/Inf" in err and "Keras reference outputs NaN/Inf" in err
