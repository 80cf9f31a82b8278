"""The runtime's backend table is the one place a backend's facts live: a row added to it (and nothing else) shows
up in device profiles, their wheel lists, smoke tolerances and backend selection."""
import shutil
from pathlib import Path

import pytest

import edgeport_runtime as er
from edgeport.devices.profiles import PROFILE_DIR, get_profile
from edgeport.devices.wheelhouse import wheel_requirements
from edgeport_runtime import backends
from edgeport_runtime.backends import table
from edgeport_runtime.errors import BackendUnavailableError, UsageError
from edgeport_runtime.kinds import Format, Quantization
from edgeport_runtime.smoke import INT8_STEPS, smoke

RUNTIME_FIXTURE = Path(__file__).resolve().parents[1] / "runtime" / "tests" / "fixtures" / "bundle"

# LiteRT's own module and session code under another name, with its own wheel, extra, platforms, kinds and
# tolerance: every one of them must be read from this row, since nothing else knows the name "fakert"
FAKE = table.Backend(
    "fakert", Format.TFLITE, "ai_edge_litert.interpreter", "edgeport_runtime.backends.tflite", "fake",
    ("fake-rt>=1.0",), "fake-rt", {"x86_64": "3.10-3.13", "aarch64": "3.10-3.13"},
    frozenset({Quantization.FLOAT32, Quantization.INT8}), int8_steps=3, float_atol=2e-5,
    companions=("fake-companion",), limits="fakert has no hybrid kernels")


@pytest.fixture
def fake_row():
    """The fake row first in the table (the preferred tflite backend) for one test; the table restored after."""
    saved = dict(table.BACKENDS)
    table.BACKENDS.clear()
    table.BACKENDS.update({FAKE.name: FAKE, **saved})
    try:
        yield FAKE
    finally:
        table.BACKENDS.clear()
        table.BACKENDS.update(saved)


def _profile(tmp_path, arch="aarch64", python="3.11"):
    src = (PROFILE_DIR / "rpi4.toml").read_text()
    src = src.replace('backend = "litert"', 'backend = "fakert"').replace('ai-edge-litert = "2.3.0"',
                                                                         'fake-rt = "1.0.0"')
    src = src.replace('python = "3.11"', f'python = "{python}"')
    if arch != "aarch64":
        src = src.replace("aarch64", arch)
    path = tmp_path / "fake.toml"
    path.write_text(src)
    return str(path)


def test_fake_row_reaches_profile_wheels_and_kinds(fake_row, tmp_path):
    p = get_profile(_profile(tmp_path))
    assert p.backends == ["fakert", "onnxruntime"] and p.formats == ["onnx", "tflite"]
    assert p.extras[:2] == ["fake", "onnx"]
    reqs = wheel_requirements(p)
    assert "fake-rt==1.0.0" in reqs and "fake-companion" in reqs  # the companion, pinned by the constraints
    assert p.can_run("tflite", "int8") == (True, "")
    ok, why = p.can_run("tflite", "dynamic-int8")
    assert not ok and why == "fakert has no hybrid kernels"
    assert Quantization.DYNAMIC_INT8 in p.cannot_run()


def test_fake_row_platforms_refuse_a_profile_without_wheels(fake_row, tmp_path):
    with pytest.raises(UsageError, match=r"fake-rt \(backend fakert\) has no wheels for aarch64 with Python 3.9"):
        get_profile(_profile(tmp_path, python="3.9"))


def test_fake_row_is_selected_with_its_kinds(fake_row, monkeypatch):
    assert backends.choose_backend("tflite").name == "fakert"
    assert backends.choose_backend("tflite", quantization="int8").name == "fakert"
    # a kind the row does not list goes to the next installed backend that runs it
    assert backends.choose_backend("tflite", quantization="dynamic-int8").name == "litert"
    with pytest.raises(UsageError, match="fakert has no hybrid kernels"):
        backends.choose_backend("tflite", "fakert", quantization="dynamic-int8")
    monkeypatch.setattr(backends, "is_installed", lambda n: False)
    with pytest.raises(BackendUnavailableError, match=r"pip install edgeport-runtime\[fake\]"):
        backends.choose_backend("tflite", "fakert")


def test_fake_row_smoke_uses_its_tolerance(fake_row, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(RUNTIME_FIXTURE, bundle)
    with er.load(bundle, artifact="tflite-int8") as m:
        assert m.info["backend"] == "fakert"
    res = smoke(str(bundle), threads=1)
    rows = {r["artifact"]: r for r in res["artifacts"]}
    assert rows["tflite-int8"]["backend"] == "fakert" and rows["tflite-int8"]["tolerance_steps"] == 3
    assert rows["tflite-fp32"]["backend"] == "fakert" and rows["tflite-fp32"]["tolerance"] == 2e-5
    assert rows["onnx-fp32"]["backend"] == "onnxruntime" and res["passed"]
    assert INT8_STEPS["fakert"] == 3  # the by-name view other code reads reflects the row too
