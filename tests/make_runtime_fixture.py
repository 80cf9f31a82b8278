"""Regenerate runtime/tests/fixtures/bundle: a small bundle built by the toolkit, for the TF-free runtime tests.

The runtime's test environment has no TensorFlow, so it cannot build bundles; this script (run in the toolkit
environment: `.venv/bin/python tests/make_runtime_fixture.py`) makes one from an `mlp` trained on `digits` with
the recipes the runtime must read: int8 TFLite, float32 TFLite and float32 ONNX. ~40 KB in all.
"""
import shutil
import sys
import tempfile
from pathlib import Path

from edgeport.cli import main

DEST = Path(__file__).resolve().parents[1] / "runtime" / "tests" / "fixtures" / "bundle"

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        code = main(["train", "--model", "mlp", "--epochs", "8", "--quiet", "--out", str(run)])
        code = code or main(["convert", str(run / "model.keras"), "--out", str(Path(d) / "b"), "--recipes",
                             "tflite-int8,tflite-fp32,onnx-fp32", "--calibration", "100"])
        if code:
            sys.exit(code)
        shutil.rmtree(DEST, ignore_errors=True)
        shutil.copytree(Path(d) / "b", DEST)
        print(f"wrote {DEST}")
