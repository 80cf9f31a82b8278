"""edgeport-runtime never imports TensorFlow, Keras, tf_keras, tfmot or tf2onnx.

The fresh-interpreter check is a function so the toolkit suite can run it with the toolkit's Python too
(tests/test_runtime_isolation.py): there TensorFlow IS installed, so an import of it would really show up.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ["tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "tf2onnx", "edgeport"]


def modules_after_runtime_use(python: str, bundle: Path) -> set:
    """Top-level modules loaded by a fresh ``python`` after importing the runtime and running every artifact."""
    code = (
        "import sys, json, numpy as np, edgeport_runtime as er\n"
        "from edgeport_runtime import cli, bench, inputs, smoke\n"
        "for art in ('tflite-int8', 'tflite-fp32', 'onnx-fp32'):\n"
        f"    er.load({str(bundle)!r}, artifact=art).predict(np.zeros((1, 8, 8, 1), np.float32))\n"
        f"smoke.smoke({str(bundle)!r})\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_fresh_interpreter_imports_no_tensorflow(bundle):
    loaded = modules_after_runtime_use(sys.executable, bundle)
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    assert "edgeport_runtime" in loaded and "numpy" in loaded


@pytest.mark.skipif(os.environ.get("EDGEPORT_RUNTIME_ENV") != "1",
                    reason="only meaningful in the runtime's own environment (make test-runtime sets it)")
def test_runtime_environment_has_no_tensorflow_installed():
    for name in ("tensorflow", "keras", "tf_keras"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed in the runtime test environment"
