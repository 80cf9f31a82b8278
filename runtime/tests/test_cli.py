"""edgeport-run info / predict / bench, and its one-line errors."""
import json

import numpy as np
import pytest

from edgeport_runtime.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_lists_backend_and_artifacts(bundle, capsys):
    code, out, _ = run(capsys, "info", bundle)
    assert code == 0 and "backend  litert" in out and "* tflite-int8" in out and "scale=" in out


def test_info_json(bundle, capsys):
    code, out, _ = run(capsys, "info", bundle, "--json", "--artifact", "onnx-fp32")
    info = json.loads(out)
    assert info["backend"] == "onnxruntime" and info["inputs"][0]["shape"] == [None, 8, 8, 1]


def test_predict_npy_matches_library(bundle, tmp_path, capsys):
    x = np.load(bundle / "check_inputs.npy")
    np.save(tmp_path / "x.npy", x)
    code, out, _ = run(capsys, "predict", bundle, "--input", tmp_path / "x.npy", "--json")
    assert code == 0
    np.testing.assert_array_equal(np.asarray(json.loads(out)["outputs"], np.float32),
                                  np.load(bundle / "oracle_tflite-int8.npy"))


def test_predict_single_sample_npy_gets_batch_dim(bundle, tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.load(bundle / "check_inputs.npy")[0])
    code, out, _ = run(capsys, "predict", bundle, "--input", tmp_path / "one.npy")
    assert code == 0 and out.startswith("sample 0: ")


def test_predict_image_uses_manifest_preprocessing(bundle, tmp_path, capsys):
    from PIL import Image

    # digits were 0..16 per pixel; an 8-bit image is mapped onto that range, then scaled by 1/16
    x = np.load(bundle / "check_inputs.npy")[0, :, :, 0]
    Image.fromarray((x * 255).round().astype(np.uint8)).save(tmp_path / "d.png")
    code, out, _ = run(capsys, "predict", bundle, "--input", tmp_path / "d.png", "--json")
    assert code == 0
    got = np.asarray(json.loads(out)["outputs"])[0]
    want = np.load(bundle / "oracle_tflite-int8.npy")[0]
    assert got.argmax() == want.argmax()


def test_predict_csv_rows(bundle, tmp_path, capsys):
    x = np.load(bundle / "check_inputs.npy")[:3].reshape(3, -1) * 16  # raw digits pixels, 0..16
    (tmp_path / "x.csv").write_text("\n".join(",".join(f"{v:g}" for v in r) for r in x))
    code, out, _ = run(capsys, "predict", bundle, "--input", tmp_path / "x.csv")
    assert code == 0 and len(out.strip().splitlines()) == 3


def test_bench_reports_every_number(bundle, capsys):
    code, out, _ = run(capsys, "bench", bundle, "--runs", "20", "--batch", "8", "--json")
    r = json.loads(out)
    assert code == 0
    for key in ("load_s", "first_inference_ms", "throughput_per_s", "peak_rss_mb", "cold_start_s",
                "cold_start_rss_mb"):
        assert r[key] > 0, key
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]


@pytest.mark.parametrize("argv, message", [
    (["info", "NOPE"], "no such file or directory"),
    (["info", "BUNDLE", "--backend", "litrt"], "Did you mean 'litert'"),
    (["predict", "BUNDLE", "--input", "NOPE.npy"], "no such file"),
    (["bench", "BUNDLE", "--runs", "0"], "--runs and --batch must be >= 1"),
])
def test_errors_are_one_line_exit_2(bundle, capsys, argv, message):
    argv = [str(bundle) if a == "BUNDLE" else a for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_wrong_shape_npy_shows_expected_vs_got(bundle, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 9, 8, 1), np.float32))
    code, _, err = run(capsys, "predict", bundle, "--input", tmp_path / "x.npy")
    assert code == 2 and "expected shape ['N', 8, 8, 1], got [2, 9, 8, 1]" in err
