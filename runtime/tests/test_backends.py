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
