"""Backend table and selection: preference order, explicit choice, missing backends name the pip extra."""
import pytest

from edgeport_runtime import backends
from edgeport_runtime.errors import BackendUnavailableError, UsageError


def test_tflite_prefers_litert_when_installed():
    assert backends.choose_backend("tflite").name == "litert"
    assert backends.choose_backend("onnx").name == "onnxruntime"


def test_falls_back_to_tflite_runtime(monkeypatch):
    monkeypatch.setattr(backends, "is_installed", lambda n: n == "tflite-runtime")
    assert backends.choose_backend("tflite").name == "tflite-runtime"


def test_missing_backend_names_the_extra(monkeypatch):
    monkeypatch.setattr(backends, "is_installed", lambda n: False)
    with pytest.raises(BackendUnavailableError, match=r"pip install edgeport-runtime\[onnx\]"):
        backends.choose_backend("onnx")


def test_requested_but_missing_backend(monkeypatch):
    monkeypatch.setattr(backends, "is_installed", lambda n: n != "tflite-runtime")
    with pytest.raises(BackendUnavailableError, match=r"edgeport-runtime\[tflite\]"):
        backends.choose_backend("tflite", "tflite-runtime")


def test_unknown_backend_hint():
    with pytest.raises(UsageError, match="Did you mean 'litert'"):
        backends.choose_backend("tflite", "litrt")


def test_backend_format_mismatch():
    with pytest.raises(UsageError, match="runs onnx artifacts, not tflite"):
        backends.choose_backend("tflite", "onnxruntime")


def test_install_hint_per_platform():
    assert "edgeport-runtime[tflite]" in backends.install_hint("tflite", "armv7l")
    assert "edgeport-runtime[litert]" in backends.install_hint("tflite", "aarch64")
    assert "no backend for onnx artifacts has wheels for armv7l" in backends.install_hint("onnx", "armv7l")


def test_install_hint_on_armv7_python313_names_the_numpy_backend(monkeypatch):
    """32-bit Pi OS trixie (Python 3.13): no tflite-runtime wheel exists, so the hint must not name it."""
    import sys

    from edgeport_runtime import backends

    monkeypatch.setattr(sys, "version_info", (3, 13, 0))
    hint = backends.install_hint("tflite", "armv7l")
    assert "edgeport-runtime[numpy]" in hint and "tflite-runtime" not in hint
    monkeypatch.setattr(sys, "version_info", (3, 11, 2))
    assert "edgeport-runtime[tflite]" in backends.install_hint("tflite", "armv7l")


def test_table_requirements_match_pyproject_extras():
    """The table says what each backend's pip extra installs; runtime/pyproject.toml must say the same."""
    import tomllib
    from pathlib import Path

    from edgeport_runtime.backends.table import BACKENDS

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for b in BACKENDS.values():
        assert tuple(extras[b.extra]) == b.requirements, b.name


def test_dynamic_range_artifact_skips_tflite_runtime(monkeypatch):
    """tflite-runtime 2.14 cannot load TF 2.21 dynamic-range files: with it and numpy installed, numpy runs them."""
    monkeypatch.setattr(backends, "is_installed", lambda n: n in ("tflite-runtime", "numpy"))
    assert backends.choose_backend("tflite", quantization="int8").name == "tflite-runtime"
    assert backends.choose_backend("tflite", quantization="dynamic-int8").name == "numpy"
    with pytest.raises(UsageError, match="cannot run this dynamic-range artifact.*FULLY_CONNECTED op version 12"):
        backends.choose_backend("tflite", "tflite-runtime", quantization="dynamic-int8")


def test_manifest_kinds_are_enums_and_json_strings(bundle):
    import json

    from edgeport_runtime.kinds import Format, Quantization
    from edgeport_runtime.manifest import read_manifest, write_manifest

    man = read_manifest(bundle)
    art = man.artifact("tflite-int8")
    assert art.format is Format.TFLITE and art.quantization is Quantization.INT8
    write_manifest(bundle, man)
    d = json.loads((bundle / "manifest.json").read_text())
    assert {(a["format"], a["quantization"]) for a in d["artifacts"]} >= {("tflite", "int8"), ("onnx", "float32")}


def test_manifest_unknown_quantization_refused(bundle):
    import json

    from edgeport_runtime.errors import ModelLoadError
    from edgeport_runtime.manifest import read_manifest

    d = json.loads((bundle / "manifest.json").read_text())
    d["artifacts"][0]["quantization"] = "int4"
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="unknown quantization 'int4'; expected one of float32, float16"):
        read_manifest(bundle)
