"""Fixtures for the runtime tests: a copy of the toolkit-built bundle each test may modify."""
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "bundle"


@pytest.fixture
def bundle(tmp_path):
    """A fresh copy of the fixture bundle (tflite-int8, tflite-fp32, onnx-fp32 of an mlp on digits)."""
    dest = tmp_path / "bundle"
    shutil.copytree(FIXTURE, dest)
    return dest
