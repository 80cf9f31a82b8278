"""Manifest parsing: round trip, schema version, missing fields, corrupt JSON."""
import json

import pytest

from edgeport_runtime.errors import IntegrityError, ModelLoadError, UsageError
from edgeport_runtime.manifest import SCHEMA_VERSION, manifest_from_dict, read_manifest, write_manifest


def test_fixture_manifest_parses(bundle):
    m = read_manifest(bundle)
    assert m.schema_version == SCHEMA_VERSION
    assert [a.name for a in m.artifacts] == ["tflite-fp32", "tflite-int8", "onnx-fp32"]
    assert m.default_artifact == "tflite-int8" and m.labels == [str(i) for i in range(10)]
    int8 = m.artifact("tflite-int8")
    assert int8.inputs[0].dtype == "int8" and int8.inputs[0].quantized and int8.inputs[0].shape == [None, 8, 8, 1]


def test_manifest_round_trip_is_identical(bundle, tmp_path):
    m = read_manifest(bundle)
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path).to_dict() == m.to_dict()


def test_unknown_schema_version_rejected(bundle):
    d = json.loads((bundle / "manifest.json").read_text())
    d["schema_version"] = 99
    with pytest.raises(IntegrityError, match="unknown manifest schema_version 99"):
        manifest_from_dict(d)


def test_missing_artifact_field_named(bundle):
    d = json.loads((bundle / "manifest.json").read_text())
    del d["artifacts"][1]["sha256"]
    with pytest.raises(ModelLoadError, match=r"artifact #1 \('tflite-int8'\) is missing field 'sha256'"):
        manifest_from_dict(d)


def test_unknown_format_rejected(bundle):
    d = json.loads((bundle / "manifest.json").read_text())
    d["artifacts"][0]["format"] = "tensorrt"
    with pytest.raises(ModelLoadError, match="unknown format 'tensorrt'"):
        manifest_from_dict(d)


def test_corrupt_json_rejected(bundle):
    (bundle / "manifest.json").write_text('{"schema_version": 1, "artif')
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        read_manifest(bundle)


def test_unknown_artifact_name_hint(bundle):
    with pytest.raises(UsageError, match="Did you mean 'tflite-int8'"):
        read_manifest(bundle).artifact("tflite-int9")
