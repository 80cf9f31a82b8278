"""The pure-numpy TFLite backend against ai-edge-litert (the oracle) on the fixture bundle's .tflite files,
plus crafted bad files. No TensorFlow: crafted models are byte edits of the fixture made here."""
import json
import math
import shutil
import struct

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import edgeport_runtime as er
from edgeport_runtime import backends
from edgeport_runtime.backends import numpy_backend
from edgeport_runtime.backends.npy import kernels_int8
from edgeport_runtime.errors import ModelLoadError

import tflite


def _litert(path, x):
    it = Interpreter(model_path=str(path), num_threads=1)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _inputs(session, n=16):
    spec = session.inputs[0]
    x = np.random.default_rng(0).uniform(0, 1, (n, *spec.shape[1:])).astype(np.float32)
    if spec.dtype == "int8":
        x = np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
    return x


def test_int8_fixture_matches_litert_bit_for_bit(bundle):
    path = bundle / "tflite-int8.tflite"
    s = numpy_backend.NumpySession(str(path))
    x = _inputs(s)
    np.testing.assert_array_equal(s.run([x])[0], _litert(path, x))


def test_fp32_fixture_matches_litert_within_1e5(bundle):
    path = bundle / "tflite-fp32.tflite"
    s = numpy_backend.NumpySession(str(path))
    x = _inputs(s)
    # same float32 arithmetic, other summation order: observed <= 3e-8 on these softmax outputs
    np.testing.assert_allclose(s.run([x])[0], _litert(path, x), atol=1e-5, rtol=0)


def test_load_with_backend_numpy_reports_it_and_matches_litert(bundle):
    m = er.load(bundle, artifact="tflite-int8", backend="numpy")
    ref = er.load(bundle, artifact="tflite-int8", backend="litert")
    assert m.info["backend"] == "numpy"
    x = np.load(bundle / "check_inputs.npy")
    np.testing.assert_array_equal(m.predict(x), ref.predict(x))


def test_numpy_backend_chosen_only_when_nothing_compiled(monkeypatch):
    assert backends.choose_backend("tflite").name != "numpy"  # litert is installed in this environment
    monkeypatch.setattr(backends, "is_installed", lambda n: n == "numpy")
    assert backends.choose_backend("tflite").name == "numpy"


def test_numpy_is_last_tflite_backend_in_preference():
    assert [n for n, b in backends.BACKENDS.items() if b.format == "tflite"][-1] == "numpy"


def _patch_first_op(path, field_slot, value, fmt, options=False):
    """Overwrite one scalar field of the first operator code (or of the first FULLY_CONNECTED's options)."""
    data = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    if options:
        sg = model.Subgraphs(0)
        fc = next(sg.Operators(i) for i in range(sg.OperatorsLength())
                  if sg.Operators(i).BuiltinOptionsType() == tflite.BuiltinOptions.FullyConnectedOptions)
        tab = fc.BuiltinOptions()
    else:
        tab = model.OperatorCodes(model.Subgraphs(0).Operators(0).OpcodeIndex())._tab
    off = tab.Offset(field_slot)
    assert off, "the field to patch is stored in the fixture"  # guards the crafting, not the code under test
    struct.pack_into(fmt, data, tab.Pos + off, value)
    path.write_bytes(bytes(data))


def test_unsupported_op_refused_at_load_naming_op_and_file(bundle, tmp_path):
    bad = tmp_path / "svdf.tflite"
    shutil.copy(bundle / "tflite-int8.tflite", bad)
    _patch_first_op(bad, 4, 27, "<b")  # deprecated_builtin_code -> SVDF (27)
    _patch_first_op(bad, 10, 27, "<i")  # builtin_code -> SVDF
    with pytest.raises(ModelLoadError, match=r"svdf\.tflite: op SVDF .*not supported"):
        numpy_backend.NumpySession(str(bad))


def test_unknown_fused_activation_refused_at_load(bundle, tmp_path):
    bad = tmp_path / "signbit.tflite"
    shutil.copy(bundle / "tflite-int8.tflite", bad)
    _patch_first_op(bad, 4, 5, "<b", options=True)  # FullyConnectedOptions.fused_activation_function = SIGN_BIT
    with pytest.raises(ModelLoadError, match=r"signbit\.tflite: op FULLY_CONNECTED .*fused activation 5"):
        numpy_backend.NumpySession(str(bad))


@pytest.mark.parametrize("cut", [7, 200, -100])
def test_truncated_or_corrupt_file_raises_model_load_error(bundle, tmp_path, cut):
    data = (bundle / "tflite-int8.tflite").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match=r"cut\.tflite"):
        numpy_backend.NumpySession(str(bad))


def test_quantize_multiplier_matches_hand_values():
    # 0.75 = 0.75 * 2**0: q = round(0.75 * 2**31); 3.0 = 0.75 * 2**2; tiny values underflow to (0, 0)
    assert kernels_int8.quantize_multiplier(0.75) == (1610612736, 0)
    assert kernels_int8.quantize_multiplier(3.0) == (1610612736, 2)
    assert kernels_int8.quantize_multiplier(2.0 ** -40) == (0, 0)


def test_fixed_point_multiply_rounds_like_tflite():
    # x * 0.75 with q31 multiplier; exact values: 10 -> 7.5 -> 8 (half away from zero), 4 -> 3, -4 -> -3
    q, e = kernels_int8.quantize_multiplier(0.75)
    out = kernels_int8.mul_by_quantized_multiplier(np.array([10, 4, -4, 1 << 20]), q, e)
    assert out.tolist() == [8, 3, -3, int(math.floor(0.75 * (1 << 20)))]


def test_cli_predict_with_numpy_backend_matches_toolkit_litert_outputs(bundle, tmp_path, capsys):
    from edgeport_runtime.cli import main

    x = np.load(bundle / "check_inputs.npy")
    np.save(tmp_path / "x.npy", x)
    code = main(["predict", str(bundle), "--backend", "numpy", "--input", str(tmp_path / "x.npy"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    # check_tflite-int8.npy was written by the toolkit's own LiteRT run of this artifact: must be identical
    np.testing.assert_array_equal(np.asarray(json.loads(out)["outputs"], np.float32),
                                  np.load(bundle / "check_tflite-int8.npy"))


def test_cli_unsupported_op_is_one_line_exit_2(bundle, tmp_path, capsys):
    from edgeport_runtime.cli import main

    bad = tmp_path / "svdf.tflite"
    shutil.copy(bundle / "tflite-int8.tflite", bad)
    _patch_first_op(bad, 4, 27, "<b")
    _patch_first_op(bad, 10, 27, "<i")
    code = main(["info", str(bad), "--backend", "numpy"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "SVDF" in err and "litert" in err


def test_weights_without_data_raise_model_load_error(bundle, tmp_path):
    bad = tmp_path / "noweights.tflite"
    data = bytearray((bundle / "tflite-int8.tflite").read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    sg = model.Subgraphs(0)
    fc = next(sg.Operators(i) for i in range(sg.OperatorsLength())
              if sg.Operators(i).BuiltinOptionsType() == tflite.BuiltinOptions.FullyConnectedOptions)
    tab = sg.Tensors(fc.Inputs(1))._tab
    off = tab.Offset(8)  # Tensor.buffer
    assert off, "the fixture stores the weights' buffer index"  # guards the crafting, not the code under test
    struct.pack_into("<I", data, tab.Pos + off, 0)  # buffer 0 is the empty sentinel buffer
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"noweights\.tflite: op FULLY_CONNECTED is malformed"):
        numpy_backend.NumpySession(str(bad))


def test_smoke_check_runs_with_only_the_numpy_backend(bundle, monkeypatch):
    """A device with no compiled interpreter (32-bit Pi OS on Python 3.13) smoke-checks its bundle with numpy."""
    from edgeport_runtime import backends
    from edgeport_runtime.smoke import smoke

    monkeypatch.setattr(backends, "installed_backends", lambda: ["numpy"])
    res = smoke(str(bundle))
    ran = [r for r in res["artifacts"] if "passed" in r]
    assert {r["backend"] for r in ran} == {"numpy"} and len(ran) == 2  # the two .tflite artifacts
    int8 = next(r for r in ran if r["artifact"] == "tflite-int8")
    assert res["passed"] and int8["max_steps"] == 0
