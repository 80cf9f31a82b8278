"""Regenerate runtime/tests/fixtures/bundle: a small bundle built by the toolkit, for the TF-free runtime tests.

The runtime's test environment has no TensorFlow, so it cannot build bundles; this script (run in the toolkit
environment: `.venv/bin/python tests/make_runtime_fixture.py`) makes one from an `mlp` trained on `digits` with
the recipes the runtime must read: int8 TFLite, float32 TFLite and float32 ONNX. ~40 KB in all.

It also writes the expected outputs the runtime tests compare against, each from an oracle independent of
edgeport-runtime (the bundle's own check_<artifact>.npy files were computed BY edgeport-runtime, so comparing with
them would compare the runtime with itself):

- oracle_keras.npy        Keras `model(x)` on the check inputs (the float truth)
- oracle_tflite-int8.npy  ai_edge_litert's Interpreter driven by hand: the float inputs quantized here with the
                          scale/zero point the interpreter reports, set_tensor, invoke, get_tensor, dequantized here
- oracle_tflite-fp32.npy  the same Interpreter on float inputs, no quantization
- oracle_onnx-fp32.npy    onnxruntime.InferenceSession called directly
"""
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeport.cli import main

DEST = Path(__file__).resolve().parents[1] / "runtime" / "tests" / "fixtures" / "bundle"


def litert_by_hand(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a .tflite with ai_edge_litert's own Interpreter, sample by sample, quantizing by hand when int8."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for sample in x:
        v = sample[None].astype(np.float32)
        if i["dtype"] == np.int8:
            scale, zp = i["quantization"]
            # TFLite's QUANTIZE as executed: multiply by the float32 reciprocal, round half to even, add zp
            q = np.rint(v * (np.float32(1) / np.float32(scale))) + np.float32(zp)
            v = np.clip(q, -128, 127).astype(np.int8)
        it.set_tensor(i["index"], v)
        it.invoke()
        y = it.get_tensor(o["index"])
        if o["dtype"] == np.int8:
            scale, zp = o["quantization"]
            y = (y.astype(np.int32) - zp).astype(np.float32) * np.float32(scale)
        outs.append(y)
    return np.concatenate(outs).astype(np.float32)


def onnxruntime_direct(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a .onnx with a plain onnxruntime InferenceSession."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.asarray(sess.run(None, {name: x.astype(np.float32)})[0], np.float32)


def keras_outputs(model_path: Path, x: np.ndarray) -> np.ndarray:
    """The trained Keras model's own outputs."""
    import keras

    model = keras.models.load_model(model_path, compile=False)
    return np.asarray(model(x, training=False), np.float32)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        code = main(["train", "--model", "mlp", "--epochs", "8", "--quiet", "--out", str(run)])
        code = code or main(["convert", str(run / "model.keras"), "--out", str(Path(d) / "b"), "--recipes",
                             "tflite-int8,tflite-fp32,onnx-fp32", "--calibration", "100"])
        if code:
            sys.exit(code)
        b = Path(d) / "b"
        x = np.load(b / "check_inputs.npy")
        np.save(b / "oracle_keras.npy", keras_outputs(run / "model.keras", x))
        np.save(b / "oracle_tflite-int8.npy", litert_by_hand(b / "tflite-int8.tflite", x))
        np.save(b / "oracle_tflite-fp32.npy", litert_by_hand(b / "tflite-fp32.tflite", x))
        np.save(b / "oracle_onnx-fp32.npy", onnxruntime_direct(b / "onnx-fp32.onnx", x))
        shutil.rmtree(DEST, ignore_errors=True)
        shutil.copytree(b, DEST)
        print(f"wrote {DEST}")
