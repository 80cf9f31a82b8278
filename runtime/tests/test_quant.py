"""Quantize/dequantize against hand-computed values: TFLite rounds halves away from zero, then clamps."""
import numpy as np
import pytest

from edgeport_runtime.quant import dequantize, quantize


@pytest.mark.parametrize("x, scale, zp, expected", [
    (0.5, 1.0, 0, 1),      # half rounds away from zero (numpy's rint would give 0)
    (-0.5, 1.0, 0, -1),
    (2.5, 1.0, 0, 3),      # rint would give 2
    (-2.5, 1.0, 0, -3),
    (0.49, 1.0, 0, 0),
    (-0.5, 1.0, 1, 0),     # round(x/scale) + zp = -1 + 1; round(x/scale + zp) would give 1
    (0.3, 0.1, -128, -125),
    (1000.0, 0.1, 0, 127),  # clamped to int8 max
    (-1000.0, 0.1, 0, -128),  # clamped to int8 min
    (0.0, 0.00390625, -128, -128),
    (1.0, 0.00390625, -128, 127),  # 256 - 128 = 128 -> clamped to 127
])
def test_quantize_matches_hand_computed(x, scale, zp, expected):
    assert quantize(np.array([x], np.float32), scale, zp)[0] == expected


def test_quantize_uint8_clamps_at_0_and_255():
    np.testing.assert_array_equal(quantize(np.array([-5.0, 300.0, 2.5], np.float32), 1.0, 0, "uint8"),
                                  np.array([0, 255, 3], np.uint8))


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
