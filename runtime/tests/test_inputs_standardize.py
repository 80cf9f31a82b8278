"""The CSV reader applies recorded feature standardization exactly as training did."""
import json

import numpy as np
import pytest

from edgeport_runtime.cli import main
from edgeport_runtime.errors import InputError, ModelLoadError
from edgeport_runtime.inputs import read_csv


def _write(path, text):
    path.write_text(text)
    return path


def test_read_csv_standardizes_after_scale_hand_computed(tmp_path):
    p = _write(tmp_path / "rows.csv", "a,b\n1,2\n3,4\n")
    pre = {"input_scale": 2.0, "input_offset": 1.0, "feature_mean": [5.0, 7.0], "feature_std": [2.0, 4.0]}
    # By hand: raw*2+1 = [[3,5],[7,9]]; minus mean [5,7] = [[-2,-2],[2,2]]; over std [2,4] -> below.
    np.testing.assert_array_equal(read_csv(p, [1, 2], pre), np.array([[-1.0, -0.5], [1.0, 0.5]], np.float32))


def test_read_csv_without_statistics_only_scales(tmp_path):
    p = _write(tmp_path / "rows.csv", "1,2\n3,4\n")
    np.testing.assert_array_equal(read_csv(p, [1, 2], {"input_scale": 0.5, "input_offset": 0.0}),
                                  np.array([[0.5, 1.0], [1.5, 2.0]], np.float32))


def test_read_csv_standardizes_image_shaped_input_per_feature(tmp_path):
    p = _write(tmp_path / "rows.csv", "1,2,3,4\n")
    pre = {"feature_mean": [1.0, 1.0, 1.0, 1.0], "feature_std": [1.0, 1.0, 2.0, 3.0]}
    # features are flattened in row-major order: (2, 2, 1) -> [f0 f1; f2 f3]
    np.testing.assert_array_equal(read_csv(p, [1, 2, 2, 1], pre),
                                  np.array([0.0, 1.0, 1.0, 1.0], np.float32).reshape(1, 2, 2, 1))


@pytest.mark.parametrize("pre, message", [
    ({"feature_mean": [0.0], "feature_std": [1.0, 1.0]}, "1 feature means and 2"),
    ({"feature_mean": [0.0, 0.0], "feature_std": [1.0, 0.0]}, "std must be > 0"),
    ({"feature_mean": [0.0, 0.0]}, "unusable feature_mean/feature_std"),
])
def test_read_csv_bad_statistics_rejected(tmp_path, pre, message):
    p = _write(tmp_path / "rows.csv", "1,2\n")
    with pytest.raises(InputError, match=message):
        read_csv(p, [1, 2], pre)


def test_read_csv_non_numeric_statistics_rejected_as_corrupt(tmp_path):
    p = _write(tmp_path / "rows.csv", "1,2\n")
    with pytest.raises(ModelLoadError, match=r"field 'feature_mean' must be a list of numbers"):
        read_csv(p, [1, 2], {"feature_mean": ["x", 0.0], "feature_std": [1.0, 1.0]})


def test_predict_raw_csv_equals_hand_standardized_npy(bundle, tmp_path, capsys):
    # Record statistics in the fixture bundle's manifest, then predict the same samples twice: raw rows through
    # the CSV reader, and rows standardized here by hand (numpy) through the .npy path, which applies nothing.
    man_path = bundle / "manifest.json"
    man = json.loads(man_path.read_text())
    rng = np.random.default_rng(0)
    mean = rng.uniform(2, 10, 64).round(3)
    std = rng.uniform(1, 5, 64).round(3)
    man["preprocessing"].update(feature_mean=mean.tolist(), feature_std=std.tolist(), standardized=True)
    man_path.write_text(json.dumps(man))
    raw = rng.integers(0, 17, (5, 64)).astype(np.float32)
    (tmp_path / "raw.csv").write_text("\n".join(",".join(f"{v:g}" for v in r) for r in raw) + "\n")
    scaled = raw * np.float32(man["preprocessing"]["input_scale"])
    np.save(tmp_path / "std.npy", ((scaled - mean.astype(np.float32)) / std.astype(np.float32)).reshape(5, 8, 8, 1))
    outs = []
    for name in ("raw.csv", "std.npy"):
        code = main(["predict", str(bundle), "--input", str(tmp_path / name), "--json"])
        out = capsys.readouterr().out
        assert code == 0
        outs.append(np.asarray(json.loads(out)["outputs"], np.float32))
    np.testing.assert_array_equal(outs[0], outs[1])
