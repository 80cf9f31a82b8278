"""The parity gate end to end (train briefly -> convert all recipes -> parity), and a broken artifact caught."""
import json

import numpy as np
import pytest

import edgeport_runtime as er


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
    for row in rep["artifacts"]:
        assert {"name", "format", "recipe", "bytes", "gzip_bytes", "accuracy", "accuracy_delta_pp", "agreement",
                "max_abs_diff", "latency_ms_p50", "rss_mb", "gate"} <= set(row)
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
    cfg = tmp_path / "g.toml"
    cfg.write_text("[parity.gates.tflite-int8]\nmin_agreement = 1.01\n")  # impossible: must fail
    code, _, err = cli("parity", full_bundle, "--config", cfg, "--no-diagnose")
    assert code == 1 and "tflite-int8 [litert]: top-1 agreement" in err
    cfg.write_text("[parity.gates.tflite-int9]\nmin_agreement = 0.9\n")
    code, _, err = cli("parity", full_bundle, "--config", cfg)
    assert code == 2 and "Did you mean 'tflite-int8'" in err
