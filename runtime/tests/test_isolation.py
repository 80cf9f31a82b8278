"""edgeport-runtime never imports TensorFlow, Keras, tf_keras, tfmot or tf2onnx."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

FORBIDDEN = ["tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "tf2onnx", "edgeport"]


def test_fresh_interpreter_imports_no_tensorflow(bundle):
    code = (
        "import sys, json, numpy as np, edgeport_runtime as er\n"
        "from edgeport_runtime import cli, bench, inputs\n"
        f"for art in ('tflite-int8', 'tflite-fp32', 'onnx-fp32'):\n"
        f"    er.load({str(bundle)!r}, artifact=art).predict(np.zeros((1, 8, 8, 1), np.float32))\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)
    assert "edgeport_runtime" in loaded and "numpy" in loaded


@pytest.mark.skipif(os.environ.get("EDGEPORT_RUNTIME_ENV") != "1",
                    reason="only meaningful in the runtime's own environment (make test-runtime sets it)")
def test_runtime_environment_has_no_tensorflow_installed():
    for name in ("tensorflow", "keras", "tf_keras"):
        assert importlib.util.find_spec(name) is None, f"{name} is installed in the runtime test environment"
