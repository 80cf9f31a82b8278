"""Readable output: convert progress lines, report table/figure from constructed parity and bench results."""
import numpy as np

from edgeport.convert.progress import ConvertProgress


def test_progress_shows_skipped_not_failed_and_a_summary():
    lines = []
    p = ConvertProgress(["tflite-int8", "tflite-int8-qat", "onnx-int8"], emit=lines.append, live=False)
    p.done("tflite-int8")
    p.skipped("tflite-int8-qat")
    p.failed("onnx-int8", "onnxruntime quantization failed")
    summary = p.close()
    assert lines[0].split()[:3] == ["[1/3]", "tflite-int8", "done"] and " s" in lines[0]
    assert "skipped" in lines[1] and "FAILED" not in lines[1]
    assert "FAILED" in lines[2] and "onnxruntime quantization failed" in lines[2]
    assert summary == lines[-1] and summary.startswith("converted 1 of 3 recipes in ")
    assert summary.endswith("1 skipped, 1 failed")


def test_progress_summary_says_recipe_for_one():
    lines = []
    p = ConvertProgress(["tflite-fp32"], emit=lines.append, live=False)
    p.done("tflite-fp32")
    assert " of 1 recipe in " in p.close()


def _fake_report(tmp_path, outcome_pruned="inconclusive"):
    """A constructed report dict (the shape build_report returns) with one artifact per gate outcome."""
    rows = []
    for i, (name, gate) in enumerate([("tflite-fp32", "pass"), ("tflite-int8", "FAIL"),
                                      ("tflite-int8-pruned", outcome_pruned)]):
        rows.append({"name": name, "format": "tflite", "recipe": name, "bytes": 1024 * (200 - 60 * i),
                     "gzip_bytes": 1024 * (180 - 70 * i), "accuracy": 0.99 - 0.02 * i,
                     "accuracy_delta_pp": -2.0 * i, "accuracy_delta_low_pp": -2.0 * i - 1,
                     "accuracy_delta_high_pp": -2.0 * i + 0.5, "max_drop_pp": 1.0, "agreement": 1 - 0.02 * i,
                     "latency_ms_p50": 0.01 + 0.001 * i, "rss_mb": 48.0, "gate": gate, "speedup_vs_keras": 300.0})
    return {"bundle": str(tmp_path), "task": "classification", "test_samples": 360, "model": "tiny_cnn",
            "dataset": "digits", "keras": {"metric": "accuracy", "accuracy": 0.99, "latency_ms_p50": 3.0,
                                           "rss_mb": 660.0}, "artifacts": rows}


def test_table_shows_delta_with_bounds_and_outcome(tmp_path):
    from edgeport.check.report import table

    t = table(_fake_report(tmp_path))
    assert "| -4.00 [-5.00, -3.50] |" in t and "| inconclusive |" in t and "| FAIL |" in t


def test_report_figure_is_small_and_drawn(tmp_path):
    from edgeport.check.report_plot import plot_report

    plot_report(_fake_report(tmp_path), tmp_path / "r.png")
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "r.png")
    assert 2000 < (tmp_path / "r.png").stat().st_size < 150_000
    # the three outcome colours are all drawn (pass green, fail red, inconclusive orange): rgb within 0.1
    rgb = img[..., :3].reshape(-1, 3)
    for colour in ((0x2e, 0x7d, 0x32), (0xc6, 0x28, 0x28), (0xef, 0x8f, 0x00)):
        assert np.any(np.abs(rgb - np.array(colour) / 255).max(axis=1) < 0.1), colour
