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


def test_info_into_a_closed_pipe_exits_quietly(bundle):
    """`edgeport-run info B | head -c0`: the reader is gone before the first write."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "edgeport_runtime.cli", "info", str(bundle)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # closed long before the child has imported numpy and written anything
    err = p.stderr.read().decode()
    assert p.wait() == 0 and err == ""


def test_unexpected_exception_is_one_line_internal_error(bundle, capsys, monkeypatch):
    from edgeport_runtime import cli

    def boom(args):
        raise ValueError("something\nspread over\nlines")

    monkeypatch.setattr(cli, "_info", boom)
    code, out, err = run(capsys, "info", bundle)
    assert code == 2 and out == ""
    assert err.startswith("edgeport-run info: internal error: ValueError: something spread over lines")
    assert len(err.strip().splitlines()) == 1


def test_onnxruntime_banner_kept_off_stdout_for_json(tmp_path, bundle):
    """A model whose op name is not UTF-8 makes onnxruntime print an 'EP Error' banner with print()."""
    import subprocess
    import sys

    bad = tmp_path / "bad.onnx"
    bad.write_bytes((bundle / "onnx-fp32.onnx").read_bytes().replace(b"Softmax", b"\xffoftmax"))
    out = subprocess.run([sys.executable, "-m", "edgeport_runtime.cli", "info", str(bad), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "onnxruntime cannot load it" in out.stderr


def test_image_over_the_pixel_limit_is_input_error(bundle, tmp_path, capsys, monkeypatch):
    from PIL import Image

    # Pillow refuses > 2x MAX_IMAGE_PIXELS and only warns above 1x: lower the limit so a small file is a "bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for side, name in ((50, "bomb.png"), (40, "warn.png")):  # 2,500 px > 2 x 1,000; 1,600 px > 1,000
        Image.new("L", (side, side)).save(tmp_path / name)
        code, _, err = run(capsys, "predict", bundle, "--input", tmp_path / name)
        assert code == 2 and "more than 1,000 pixels" in err and len(err.strip().splitlines()) == 1


def test_corrupt_image_is_one_line_input_error(bundle, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    code, _, err = run(capsys, "predict", bundle, "--input", tmp_path / "x.png")
    assert code == 2 and "cannot read the image" in err and len(err.strip().splitlines()) == 1
