"""Quantize/dequantize against hand-computed values.

TFLite (LiteRT 2.3, XNNPACK) computes rint(x * (1/scale)) + zero_point: halves round to even, the zero point is
added after rounding, then the result is clamped. (Measured; see quant.py.)
"""
import numpy as np
import pytest

from edgeport_runtime.quant import dequantize, quantize


@pytest.mark.parametrize("x, scale, zp, expected", [
    (0.5, 1.0, 0, 0),      # half rounds to even (C's round() would give 1)
    (1.5, 1.0, 0, 2),
    (2.5, 1.0, 0, 2),      # round() would give 3
    (-2.5, 1.0, 0, -2),
    (-1.5, 1.0, 0, -2),
    (0.51, 1.0, 0, 1),
    (-0.5, 1.0, 1, 1),     # rint(x/scale) + zp = 0 + 1; rint(x/scale + zp) = rint(0.5) would give 0
    (0.25, 0.5, 3, 3),     # 0.5 -> 0, then + 3
    (0.3, 0.1, -128, -125),
    (1000.0, 0.1, 0, 127),  # clamped to int8 max
    (-1000.0, 0.1, 0, -128),  # clamped to int8 min
    (0.0, 0.00390625, -128, -128),
    (1.0, 0.00390625, -128, 127),  # 256 - 128 = 128 -> clamped to 127
])
def test_quantize_matches_hand_computed(x, scale, zp, expected):
    assert quantize(np.array([x], np.float32), scale, zp)[0] == expected


def test_quantize_uint8_clamps_at_0_and_255():
    np.testing.assert_array_equal(quantize(np.array([-5.0, 300.0, 3.5], np.float32), 1.0, 0, "uint8"),
                                  np.array([0, 255, 4], np.uint8))


def test_quantize_multiplies_by_float32_reciprocal():
    # 0.64698684 / 0.00784226507 is -82.4999967 exactly but -82.5 in float32 division; TFLite multiplies by
    # the float32 reciprocal, which gives -82.49999 -> -82 (this value was a real mismatch once)
    assert quantize(np.array([-0.64698684], np.float32), 0.00784226506948471, -1)[0] == -83


def test_infinities_clamp_and_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = quantize(np.array([np.inf, -np.inf], np.float32), 0.1, 0)
    assert q.tolist() == [127, -128]


def test_quantize_returns_requested_dtype():
    assert quantize(np.zeros((2, 3), np.float32), 0.5, 0).dtype == np.int8


def test_dequantize_matches_hand_computed():
    q = np.array([-128, -1, 0, 127], np.int8)
    np.testing.assert_array_equal(dequantize(q, 0.5, -1), np.array([-63.5, 0.0, 0.5, 64.0], np.float32))
    assert dequantize(q, 0.5, -1).dtype == np.float32


def test_roundtrip_error_is_at_most_half_a_step():
    x = np.linspace(-1, 1, 1001, dtype=np.float32)
    scale = 2 / 255
    back = dequantize(quantize(x, scale, 0), scale, 0)
    # within the representable range the only error is rounding: at most scale/2 (+ float32 slack)
    assert np.abs(back - x).max() <= scale / 2 + 1e-6


def test_quantize_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="unsupported dtype"):
        quantize(np.zeros(1), 1.0, 0, "int4")
