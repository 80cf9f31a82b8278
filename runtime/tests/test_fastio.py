"""predict's fast path (edgeport_runtime.fastio) gives bit-identical results to the checked path and to LiteRT's own
invoke on inputs quantized by the formula LiteRT's QUANTIZE kernel runs; and it is the path actually taken."""
import threading

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import edgeport_runtime as er
from edgeport_runtime import fastio
from edgeport_runtime.errors import InputError, ModelLoadError
from edgeport_runtime.inputs import _scale as scale_raw
from edgeport_runtime.manifest import TensorSpec
from edgeport_runtime.quant import quantize
from edgeport_runtime.sections import Preprocessing

RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _formula(x, scale, zp, dtype="int8"):
    """TFLite's executed QUANTIZE (rint(x * float32(1/scale)) + zp, clamped), written out here as the oracle."""
    lo, hi = RANGE[dtype]
    t = np.rint(x.astype(np.float32) * (np.float32(1) / np.float32(scale))) + np.float32(zp)
    return np.clip(t, lo, hi).astype(dtype)


def _litert(path, q):
    """LiteRT's own invoke on already-quantized inputs, dequantized by hand: the reference outputs."""
    it = Interpreter(model_path=str(path), num_threads=1)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(i["index"], list(q.shape))
    it.allocate_tensors()
    it.set_tensor(i["index"], q)
    it.invoke()
    s, zp = o["quantization"]
    return (it.get_tensor(o["index"]).astype(np.int32) - zp).astype(np.float32) * np.float32(s)


def _inputs(n, seed=0):
    """Digits-like inputs in [0, 1] plus exact rounding ties of the input scale (x * 255 = k + 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 8, 8, 1)).astype(np.float32)
    ties = (rng.integers(0, 254, (n, 8, 8, 1)) + np.float32(0.5)) / np.float32(255)
    x[:, ::2] = ties[:, ::2].astype(np.float32)
    return x


@pytest.fixture
def int8_model(bundle):
    with er.load(bundle, artifact="tflite-int8", num_threads=1) as m:
        yield m, bundle / "tflite-int8.tflite"


def _no_fallback(monkeypatch, m):
    """Make the slow paths raise: a test using this proves the fast path ran."""
    def boom(*a, **k):
        raise AssertionError("the checked/clipping path ran")
    monkeypatch.setattr(m._fast, "_prepare_clipped", boom)
    monkeypatch.setattr(m, "_check", boom)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_fast_predict_equals_litert_and_checked_path(int8_model, monkeypatch, n):
    m, path = int8_model
    spec = m.inputs[0]
    x = _inputs(n, seed=n)
    want = _litert(path, _formula(x, spec.scale, spec.zero_point))
    checked = m.predict(x.astype(np.float64))  # float64 is not the fast path's dtype: the checked path
    _no_fallback(monkeypatch, m)
    got = m.predict(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, checked)
    assert got.dtype == np.float32


def test_fast_predict_clips_out_of_range_like_litert(int8_model):
    m, path = int8_model
    spec = m.inputs[0]
    x = _inputs(3) * np.float32(3) - np.float32(1)  # [-1, 2]: a third of the values clip at either end
    np.testing.assert_array_equal(m.predict(x), _litert(path, _formula(x, spec.scale, spec.zero_point)))


def test_fast_predict_nan_inf_still_refused(int8_model):
    m, _ = int8_model
    for bad in (np.nan, np.inf, -np.inf):
        x = _inputs(1)
        x[0, 3, 3, 0] = bad
        with pytest.raises(InputError, match="NaN/Inf"):
            m.predict(x)
        # allow_nonfinite: the checked path's answer (NaN -> 0.0, Inf clamps), same as float64 input gives
        np.testing.assert_array_equal(m.predict(x, allow_nonfinite=True),
                                      m.predict(x.astype(np.float64), allow_nonfinite=True))


def test_fast_predict_uint8_input_is_a_table_lookup(int8_model, monkeypatch):
    m, path = int8_model
    spec = m.inputs[0]
    u = np.random.default_rng(2).integers(0, 2, (5, 8, 8, 1)).astype(np.uint8)  # 0/1 values: in range
    want = _litert(path, _formula(u.astype(np.float32), spec.scale, spec.zero_point))
    _no_fallback(monkeypatch, m)
    np.testing.assert_array_equal(m.predict(u), want)


def test_predict_pixels_equals_scaled_predict(int8_model, monkeypatch):
    m, path = int8_model
    spec = m.inputs[0]
    pre = m.manifest.preprocessing  # digits: input_scale 1/16
    px = np.random.default_rng(3).integers(0, 17, (4, 8, 8, 1)).astype(np.uint8)
    want = _litert(path, _formula(scale_raw(px, pre), spec.scale, spec.zero_point))
    np.testing.assert_array_equal(m.predict(scale_raw(px, pre)), want)
    _no_fallback(monkeypatch, m)
    np.testing.assert_array_equal(m.predict_pixels(px), want)


def test_predict_pixels_refuses_non_uint8(int8_model):
    m, _ = int8_model
    with pytest.raises(InputError, match="takes uint8 pixel values, got dtype float32"):
        m.predict_pixels(np.zeros((1, 8, 8, 1), np.float32))


def test_predict_pixels_float_model_uses_checked_path(bundle):
    with er.load(bundle, artifact="tflite-fp32", num_threads=1) as m:
        px = np.random.default_rng(4).integers(0, 17, (2, 8, 8, 1)).astype(np.uint8)
        np.testing.assert_array_equal(m.predict_pixels(px), m.predict(scale_raw(px, m.manifest.preprocessing)))


def test_threads_share_buffers_safely(int8_model):
    m, _ = int8_model
    xs = [_inputs(1, seed=s) for s in range(16)]
    want = [m.predict(x.astype(np.float64)) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(50):
            got[i] = m.predict(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("scale", [1 / 255, 0.0123, 0.5, 3.7, 1.0])
def test_fast_quantize_equals_formula_for_every_zero_point_kind(dtype, scale):
    """Even and odd zero points (folded into the magic number or added after), ties, clipping, big values."""
    lo, hi = RANGE[dtype]
    rng = np.random.default_rng(5)
    span = (hi - lo) * scale
    for zp in sorted({lo, lo + 1, -3, 0, 5, hi - 1, hi} & set(range(lo, hi + 1))):
        fp = fastio.FastPath(TensorSpec("x", [None, 4000], dtype, scale, zp), TensorSpec("y", [None, 1], "float32"),
                             256)
        ties = ((rng.integers(lo, hi, 2000) - zp) + np.float32(0.5)).astype(np.float32) * np.float32(scale)
        inside = rng.uniform(lo - zp, hi - zp, 2000).astype(np.float32) * np.float32(scale)
        x = np.concatenate([ties, inside]).astype(np.float32)[None]
        np.testing.assert_array_equal(fp.prepare(x), _formula(x, scale, zp, dtype))
        np.testing.assert_array_equal(fp.prepare(x), quantize(x, scale, zp, dtype))
        for edge in (hi + 1, lo - 1):  # one value just past one end, the rest in range: the window's edges
            y = x.copy()
            y[0, 7] = np.float32(edge - zp) * np.float32(scale)
            np.testing.assert_array_equal(fp.prepare(y), _formula(y, scale, zp, dtype))
        wide = rng.normal(0, span, (1, 4000)).astype(np.float32)
        wide[0, :3] = [3e30, -3e30, 1e8]
        np.testing.assert_array_equal(fp.prepare(wide), _formula(wide, scale, zp, dtype))


def test_pixel_table_is_one_integer_addition_when_scales_match():
    """input_scale 1/255 and an input quantized with scale 1/255, zero point -128: q = pixel - 128."""
    spec = TensorSpec("x", [None, 96, 96, 3], "int8", 1 / 255, -128)
    pre = Preprocessing(input_scale=1 / 255)
    fp = fastio.plan([spec], [TensorSpec("y", [None, 2], "int8", 1 / 256, -128)], 256,
                     lambda raw: scale_raw(raw, pre))
    assert fp.pixels.offset == np.uint8(128)
    px = np.random.default_rng(6).integers(0, 256, (2, 96, 96, 3)).astype(np.uint8)
    np.testing.assert_array_equal(fp.prepare_pixels(px), _formula(scale_raw(px, pre), 1 / 255, -128))


def test_predict_pixels_with_malformed_preprocessing(bundle):
    """A manifest whose input_scale is not a number is refused when the bundle loads (the typed Preprocessing
    section); one whose scale is NaN is refused the same way (NaN
    pixels must never be tabled into silent garbage)."""
    import json

    d = json.loads((bundle / "manifest.json").read_text())
    d["preprocessing"]["input_scale"] = "sixteen"
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="input_scale"):
        er.load(bundle, artifact="tflite-int8", num_threads=1)
    d["preprocessing"]["input_scale"] = float("nan")  # NaN pixels must not be tabled into silent garbage
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="finite number"):
        er.load(bundle, artifact="tflite-int8", num_threads=1)
