"""Typed manifest sections (source, preprocessing, calibration, check): old manifests load, round trips, bad types."""
import copy
import json

import pytest

from edgeport_runtime.errors import IntegrityError, ModelLoadError
from edgeport_runtime.manifest import manifest_from_dict, read_manifest, write_manifest
from edgeport_runtime.sections import Calibration, Check, DataRecord, Preprocessing, Source

# The four sections exactly as the previous edgeport (plain dicts) wrote them for a digits run converted with
# --data digits: nulls included, integer raw_range, tabular statistics.
OLD_SECTIONS = {
    "source": {"path": "/runs/a/model.keras", "sha256": None, "kind": "keras", "input_shape": [8, 8, 1],
               "run_dir": None, "data": {"data": "digits", "seed": 3, "split": "20% held out"}},
    "preprocessing": {"input_scale": 0.0625, "input_offset": 0.0, "color": "grayscale", "layout": "NHWC",
                      "raw_range": [0, 16], "features": ["a", "b"], "standardized": True,
                      "feature_mean": [1.5, 2], "feature_std": [0.5, 1.0],
                      "standardization_fitted_on": "train split"},
    "calibration": {"source": "training split of dataset digits", "count": 300, "seed": 3, "stratified": True},
    "check": {"inputs": "check_inputs.npy", "keras_outputs": "check_keras.npy"},
}


def _old_manifest(bundle):
    d = json.loads((bundle / "manifest.json").read_text())
    d.update(copy.deepcopy(OLD_SECTIONS))
    return d


def test_old_manifest_sections_load_typed(bundle):
    m = manifest_from_dict(_old_manifest(bundle))
    assert m.source == Source(path="/runs/a/model.keras", kind="keras", input_shape=[8, 8, 1],
                              data=DataRecord("digits", 3, "20% held out"))
    assert m.preprocessing.input_scale == 0.0625 and m.preprocessing.raw_range == [0.0, 16.0]
    assert m.preprocessing.feature_mean == [1.5, 2.0] and m.preprocessing.standardized is True
    assert m.calibration == Calibration("training split of dataset digits", 300, 3, True)
    assert m.check == Check("check_inputs.npy", "check_keras.npy")


def test_old_manifest_round_trips_to_the_same_json(bundle, tmp_path):
    old = _old_manifest(bundle)
    write_manifest(tmp_path, manifest_from_dict(old))
    new = json.loads((tmp_path / "manifest.json").read_text())
    for key, section in OLD_SECTIONS.items():
        # nulls are dropped (absent and null read the same); every other value is written back as it was
        assert new[key] == {k: v for k, v in section.items() if v is not None}, key
    assert manifest_from_dict(new).to_dict() == manifest_from_dict(old).to_dict()


def test_fixture_bundle_from_previous_version_loads(bundle):
    # the committed fixture bundle was written by the dict-based manifest code
    m = read_manifest(bundle)
    assert m.source.kind == "keras" and m.source.input_shape == [8, 8, 1]
    assert m.preprocessing.scale == 0.0625 and m.preprocessing.offset == 0.0 and m.check.inputs == "check_inputs.npy"
    assert m.calibration.count == 100


def test_unknown_section_keys_kept_and_written_back(bundle):
    d = _old_manifest(bundle)
    d["preprocessing"]["mel_bins"] = 40
    d["source"]["data"]["augment"] = ["flip"]
    d["calibration"]["method"] = {"kind": "minmax"}
    out = manifest_from_dict(d).to_dict()
    assert out["preprocessing"]["mel_bins"] == 40 and out["source"]["data"]["augment"] == ["flip"]
    assert out["calibration"]["method"] == {"kind": "minmax"}


def test_empty_sections_default(bundle):
    d = _old_manifest(bundle)
    for key in OLD_SECTIONS:
        del d[key]
    m = manifest_from_dict(d)
    assert m.preprocessing == Preprocessing() and m.preprocessing.scale == 1.0 and m.preprocessing.offset == 0.0
    assert m.source.path is None and m.check.inputs is None and m.calibration.count is None


@pytest.mark.parametrize("section, key, value, message", [
    ("preprocessing", "input_scale", "0.5", r"preprocessing: field 'input_scale' must be a finite number"),
    ("preprocessing", "raw_range", [0, 16, 255], r"preprocessing: field 'raw_range' must be a list of 2 numbers"),
    ("preprocessing", "features", ["a", 1], r"preprocessing: field 'features' must be a list of strings"),
    ("preprocessing", "standardized", "yes", r"preprocessing: field 'standardized' must be true, false or null"),
    ("source", "input_shape", [8, -1], r"source: field 'input_shape' must be a list of at most 16 dimensions"),
    ("source", "data", "digits", r"source: field 'data' must be a JSON object"),
    ("calibration", "count", 1.5, r"calibration: field 'count' must be an integer >= 0"),
    ("check", "inputs", 7, r"check: field 'inputs' must be a string"),
])
def test_bad_section_value_named(bundle, section, key, value, message):
    d = _old_manifest(bundle)
    d[section][key] = value
    with pytest.raises(ModelLoadError, match=message):
        manifest_from_dict(d)


def test_check_path_outside_bundle_rejected(bundle):
    d = _old_manifest(bundle)
    d["check"]["keras_outputs"] = "../outside.npy"
    with pytest.raises(IntegrityError, match=r"check: field 'keras_outputs': .*contains '\.\.'"):
        manifest_from_dict(d)
