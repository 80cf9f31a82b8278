"""The fast path of ``Model.predict`` for the common case: one input, one output, a well-formed numpy batch.

At batch 1 an int8 invoke takes tens of microseconds, so every numpy pass around it counts. This path does the
checked path's arithmetic (:func:`edgeport_runtime.quant.quantize` / ``dequantize``) with bit-identical results,
in fewer passes and without allocating:

- float32 inputs to a quantized model: ``y = x * (1/scale)`` into a preallocated buffer, then one float32
  addition of a magic number rounds ``y`` half-to-even and adds the zero point (see ``_MAGIC``): the float's
  bits then hold the quantized value. One min and one max over the bits check that every value is in range,
  which also rules out NaN and Inf (replacing the NaN scan and the clip); a cast keeps the low bits. Out of
  range: the plain rint/clip arithmetic, in place; NaN/Inf: the checked path, which raises.
- 8-bit inputs (uint8 pixels) to an int8 model: a 256-entry lookup table computed at load with the checked
  path's own functions; when the table is an integer offset (``q = u + c``: the quantization of the manifest's
  pixel scaling often is), one wrapping integer addition instead.
- 8-bit outputs: a 256-entry dequantization table, computed the same way.
- float32 models: only the NaN/Inf scan.

Anything else (other dtypes or shapes, batches over the limit, lists, several inputs or outputs) fails
:meth:`FastPath.accepts`, and NaN/Inf make :meth:`FastPath.prepare` return None: the caller then takes the
checked path, which raises the documented errors. ``prepare`` writes into buffers shared by all calls: call it
with the model's lock held, and finish with the interpreter before the next ``prepare``.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .manifest import TensorSpec
from .quant import RANGES, dequantize, quantize

_F32 = np.dtype(np.float32)
_BYTE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
CACHED_BATCH = 32  # buffers are kept for batches up to this size (a 96x96x3 input: 3.5 MB at 32); larger: per call
_MAX_CACHED_SHAPES = 4
# 1.5 * 2^23: float32 values within 2^22 of it are spaced exactly 1 apart, so y + _MAGIC (one IEEE addition, round
# half to even: the parity of the result decides ties, so the constant added must be even) is _MAGIC + rint(y)
# for |y| < 2^22, and consecutive integers there have consecutive bit patterns: the float's low bits are rint(y)
# in two's complement. Larger values, NaN and Inf fall outside the window of valid bit patterns.
_MAGIC = 12582912


def _byte_values(dtype: np.dtype) -> np.ndarray:
    """Every value of an 8-bit dtype, ordered by its bit pattern read as uint8 (the lookup index)."""
    return np.arange(256, dtype=np.uint8).view(dtype)


class _ByteMap:
    """int8/uint8 data -> the quantized input, through a table made by ``f`` from all 256 values."""

    def __init__(self, src: np.dtype, f: Callable[[np.ndarray], np.ndarray]):
        self.table = f(_byte_values(src))
        offset = self.table.astype(np.int64) - _byte_values(src).astype(np.int64)
        # q = u + c for every u: a wrapping uint8 addition of c gives the same bit patterns
        self.offset = np.uint8(int(offset[0]) % 256) if np.all(offset == offset[0]) else None

    def __call__(self, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.offset is not None:
            np.add(x.view(np.uint8), self.offset, out=q.view(np.uint8))
            return q
        return self.table.take(x.view(np.uint8))


def _pixel_table(pixel_map: Callable[[np.ndarray], np.ndarray], quant) -> Optional[_ByteMap]:
    """The pixel -> quantized input table, or None when the preprocessing does not give finite numbers for every
    byte (a malformed manifest: predict_pixels then takes the checked path, which says what is wrong)."""
    try:
        with np.errstate(all="ignore"):
            floats = pixel_map(_byte_values(np.dtype(np.uint8)))
    except (TypeError, ValueError, OverflowError):
        return None
    if floats.shape != (256,) or not np.all(np.isfinite(floats)):
        return None
    return _ByteMap(np.dtype(np.uint8), lambda v: quantize(floats, *quant))


class FastPath:
    """Precomputed constants, lookup tables and buffers for one model's single input and output."""

    def __init__(self, inp: TensorSpec, out: TensorSpec, max_batch: int,
                 pixel_map: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        self.tail = tuple(inp.shape[1:])
        self.max_batch = max_batch
        self.q_in = inp.quantized
        self.in_dtype = np.dtype(inp.dtype)
        self._bufs: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._bytes: Dict[np.dtype, _ByteMap] = {}
        self.pixels: Optional[_ByteMap] = None
        if self.q_in:
            lo, hi = RANGES[inp.dtype]
            q = (inp.scale, inp.zero_point, inp.dtype)
            self.inv = np.float32(1.0) / np.float32(inp.scale)
            self.zp_in = np.float32(inp.zero_point)
            self.lo, self.hi = np.float32(lo), np.float32(hi)
            zp = int(inp.zero_point)
            folded = zp if zp % 2 == 0 else 0  # an even zero point rides along in the magic number
            self.magic = np.float32(_MAGIC + folded)
            base = int(np.array(self.magic).view(np.int32)) - folded  # bits of _MAGIC
            # bits = bits(_MAGIC) + rint(y) + folded, q = rint(y) + zp: q in [lo, hi] <=> bits in this window
            self.window = (np.int32(base + folded + (lo - zp)), np.int32(base + folded + (hi - zp)))
            self.zp_after = np.array(zp - folded).astype(self.in_dtype)[()] if zp != folded else None
            # 8-bit data for an input of the same dtype is refused by the checked path (already quantized?)
            for dt in _BYTE_DTYPES:
                if dt != self.in_dtype:
                    self._bytes[dt] = _ByteMap(dt, lambda v: quantize(v.astype(np.float32), *q))
            if pixel_map is not None:
                self.pixels = _pixel_table(pixel_map, q)
        self.q_out = out.quantized
        self.out_dtype = np.dtype(out.dtype)
        self._out = (out.scale, out.zero_point)
        self._lut_out = (dequantize(_byte_values(self.out_dtype), *self._out)
                         if self.q_out and self.out_dtype.itemsize == 1 else None)

    def accepts(self, x) -> bool:
        """Cheap checks: a numpy batch of the model's sample shape in a dtype this path handles."""
        return (type(x) is np.ndarray and x.shape[1:] == self.tail and 0 < x.shape[0] <= self.max_batch
                and (x.dtype is _F32 or x.dtype in self._bytes))

    def accepts_pixels(self, x) -> bool:
        """Whether :meth:`prepare_pixels` takes ``x`` (a uint8 batch of the input's shape, a quantized model)."""
        return (self.pixels is not None and type(x) is np.ndarray and x.dtype == np.uint8
                and x.shape[1:] == self.tail and 0 < x.shape[0] <= self.max_batch)

    def _buffers(self, n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = self._bufs.get(n)
        if b is None:
            shape = (n, *self.tail)
            work = np.empty(shape, np.float32)
            b = (work, np.empty(shape, self.in_dtype), work.reshape(-1).view(np.int32))
            if n <= CACHED_BATCH:
                if len(self._bufs) >= _MAX_CACHED_SHAPES:
                    self._bufs.clear()
                self._bufs[n] = b
        return b

    def prepare(self, x: np.ndarray) -> Optional[np.ndarray]:
        """The interpreter input for an accepted ``x``, or None when the checked path must handle it (NaN/Inf)."""
        if not self.q_in:  # float32 model: pass the caller's array, once we know it is finite
            return x if math.isfinite(np.add.reduce(x, axis=None)) else None
        work, q, bits = self._buffers(x.shape[0])
        if x.dtype is not _F32:
            return self._bytes[x.dtype](x, q)
        np.multiply(x, self.inv, out=work)
        np.add(work, self.magic, out=work)
        if np.minimum.reduce(bits) >= self.window[0] and np.maximum.reduce(bits) <= self.window[1]:
            np.copyto(q, work.view(np.int32), casting="unsafe")  # keeps the low bits: q in two's complement
            if self.zp_after is not None:
                np.add(q, self.zp_after, out=q)  # wraps modulo 2^bits: exact, the result is in range
            return q
        return self._prepare_clipped(x, work, q)

    def prepare_pixels(self, x: np.ndarray) -> np.ndarray:
        """The interpreter input for accepted raw pixels: the manifest's scaling and the quantization, by table."""
        return self.pixels(x, self._buffers(x.shape[0])[1])

    def _prepare_clipped(self, x: np.ndarray, work: np.ndarray, q: np.ndarray) -> Optional[np.ndarray]:
        """Some value is out of range (clip, as quantize does) or not finite (None: the checked path decides)."""
        np.multiply(x, self.inv, out=work)
        np.rint(work, out=work)
        np.add(work, self.zp_in, out=work)
        lo, hi = np.minimum.reduce(work, axis=None), np.maximum.reduce(work, axis=None)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None  # NaN/Inf (or a finite value whose quantization overflowed float32)
        np.clip(work, self.lo, self.hi, out=work)
        np.copyto(q, work, casting="unsafe")
        return q

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """Float32 outputs from the interpreter's (a new array: never one of this path's buffers)."""
        if self._lut_out is not None and raw.dtype == self.out_dtype:
            return self._lut_out.take(raw.view(np.uint8))
        if self.q_out:
            return dequantize(raw, *self._out)
        return raw if raw.dtype == np.float32 else raw.astype(np.float32)


def plan(inputs: List[TensorSpec], outputs: List[TensorSpec], max_batch: int,
         pixel_map: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Optional[FastPath]:
    """A :class:`FastPath` when the model has one fixed-shape input (float32 or quantized) and one output.

    ``pixel_map`` turns raw uint8 pixels into model inputs (the manifest's preprocessing) for ``prepare_pixels``.
    """
    if len(inputs) != 1 or len(outputs) != 1 or None in inputs[0].shape[1:] or sys.byteorder != "little":
        return None  # the bit tricks read the low byte of a float first: little-endian only (ARM and x86 are)
    i = inputs[0]
    if not (i.quantized or i.dtype == "float32") or (i.quantized and i.dtype not in RANGES):
        return None
    return FastPath(i, outputs[0], max_batch, pixel_map)
