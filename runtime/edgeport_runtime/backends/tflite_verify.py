"""A structural check of a .tflite flatbuffer before any interpreter reads it.

The Python interpreters (ai-edge-litert, tflite-runtime) build models from files without running TFLite's own
flatbuffer verifier, so a corrupt offset or an out-of-range tensor index can crash the process in C++. This
module walks the parts of the schema the interpreter dereferences at load time, with every offset
bounds-checked: tables and their vtables, vectors, the operator/tensor/buffer index ranges, and constant
buffers whose size must match their tensor's shape. It reads only the bytes of the file (no code runs) and
raises :class:`ModelLoadError` with one line on the first inconsistency.

It cannot prove a model safe: builtin operator options are not checked, so a crafted file can still reach a
kernel with inconsistent parameters (the fuzz numbers in the README say how often that happened).
"""
from __future__ import annotations

import struct
from typing import List, Optional

from ..errors import ModelLoadError

# TensorType enum of the TFLite schema -> bytes per element (0: variable size, not checked)
_TYPE_SIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 5: 0, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 13: 0, 14: 0,
              15: 4, 16: 2, 17: 0, 18: 0, 19: 0, 20: 0}
_MAX_ELEMENTS = 1 << 31
# Zero points TFLite allows per tensor type: int8/uint8 within their range; int16 activations and int32/int64
# biases are symmetric (zero point 0)
_ZP_RANGE = {9: (-128, 127), 3: (0, 255), 7: (0, 0), 2: (0, 0), 4: (0, 0)}


class _Bad(Exception):
    pass


class _Buf:
    """Bounds-checked flatbuffer reads."""

    def __init__(self, data: bytes):
        self.b = data
        self.n = len(data)

    def _read(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            raise _Bad(f"read of {size} bytes at offset {pos} past the end ({self.n} bytes)")
        return struct.unpack_from(fmt, self.b, pos)[0]

    def u32(self, pos: int) -> int:
        return self._read("<I", pos)

    def table(self, pos: int) -> "_Table":
        vt = pos - self._read("<i", pos)
        vt_size = self._read("<H", vt)
        tbl_size = self._read("<H", vt + 2)
        if vt_size < 4 or vt_size % 2 or vt + vt_size > self.n or pos + tbl_size > self.n or tbl_size < 4:
            raise _Bad(f"table at offset {pos} has a broken vtable")
        return _Table(self, pos, vt, (vt_size - 4) // 2)

    def vector(self, pos: int, elem: int):
        """(start, length) of the vector at ``pos`` whose elements are ``elem`` bytes."""
        length = self.u32(pos)
        start = pos + 4
        if start + length * elem > self.n:
            raise _Bad(f"vector at offset {pos} ({length} elements) runs past the end")
        return start, length


class _Table:
    def __init__(self, buf: _Buf, pos: int, vt: int, nfields: int):
        self.buf, self.pos, self.vt, self.nfields = buf, pos, vt, nfields

    def _field(self, i: int) -> int:
        if i >= self.nfields:
            return 0
        off = self.buf._read("<H", self.vt + 4 + 2 * i)
        return self.pos + off if off else 0

    def scalar(self, i: int, fmt: str, default=0):
        p = self._field(i)
        return self.buf._read(fmt, p) if p else default

    def ref(self, i: int) -> Optional[int]:
        """Absolute position of the table/vector/string field ``i`` (None when absent)."""
        p = self._field(i)
        return p + self.buf.u32(p) if p else None

    def vec(self, i: int, elem: int):
        p = self.ref(i)
        return self.buf.vector(p, elem) if p is not None else (0, 0)

    def ints(self, i: int, fmt: str = "<i") -> List[int]:
        size = struct.calcsize(fmt)
        start, n = self.vec(i, size)
        return [self.buf._read(fmt, start + k * size) for k in range(n)]

    def tables(self, i: int) -> List[_Table]:
        start, n = self.vec(i, 4)
        return [self.buf.table(start + 4 * k + self.buf.u32(start + 4 * k)) for k in range(n)]


def verify_tflite(data: bytes, path: str) -> None:
    """Raise ModelLoadError when ``data`` is not a structurally sound TFLite model."""
    try:
        _verify(_Buf(data))
    except _Bad as e:
        raise ModelLoadError(f"{path}: not a valid TFLite flatbuffer ({e}); the file is corrupt or truncated."
                             ) from None
    except (struct.error, RecursionError, OverflowError, MemoryError) as e:
        raise ModelLoadError(f"{path}: not a valid TFLite flatbuffer ({type(e).__name__}); the file is corrupt."
                             ) from None


def _verify(buf: _Buf) -> None:
    model = buf.table(buf.u32(0))
    # Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers
    n_codes = len(model.tables(1))
    subgraphs = model.tables(2)
    if not subgraphs:
        raise _Bad("no subgraphs")
    buffers = model.tables(4)
    buffer_sizes = []
    for k, b in enumerate(buffers):  # Buffer: 0 data [ubyte], 1 offset (u64), 2 size (u64)
        _, n = b.vec(0, 1)
        off, size = b.scalar(1, "<Q"), b.scalar(2, "<Q")
        if off > 1 and off + size > buf.n:
            raise _Bad(f"buffer {k} points past the end of the file")
        buffer_sizes.append(n if n else (size if off > 1 else 0))
    for g, sg in enumerate(subgraphs):  # SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators
        tensors = sg.tables(0)
        nt = len(tensors)
        for t, tensor in enumerate(tensors):  # Tensor: 0 shape, 1 type, 2 buffer, 4 quantization
            shape = tensor.ints(0)
            ttype = tensor.scalar(1, "<b")
            bidx = tensor.scalar(2, "<I")
            if any(d < 0 for d in shape) or len(shape) > 16:
                raise _Bad(f"tensor {t} of subgraph {g} has shape {shape[:16]}")
            if ttype not in _TYPE_SIZE:
                raise _Bad(f"tensor {t} of subgraph {g} has unknown type {ttype}")
            if bidx >= len(buffers):
                raise _Bad(f"tensor {t} of subgraph {g} names buffer {bidx} of {len(buffers)}")
            elements = 1
            for d in shape:
                elements *= d
            if elements > _MAX_ELEMENTS:
                raise _Bad(f"tensor {t} of subgraph {g} has {elements} elements")
            have = buffer_sizes[bidx]
            if have and _TYPE_SIZE[ttype] and have != elements * _TYPE_SIZE[ttype]:
                # a constant tensor's bytes must match its shape (packed/variable-size types have size 0: skipped)
                raise _Bad(f"tensor {t} of subgraph {g}: constant data of {have} bytes for shape {shape}")
            q = tensor.ref(4)
            if q is not None:  # QuantizationParameters: 2 scale [float], 3 zero_point [long], 6 quantized_dimension
                qt = buf.table(q)
                ns, nz = qt.vec(2, 4)[1], qt.vec(3, 8)[1]
                if ns and nz and ns != nz:
                    raise _Bad(f"tensor {t} of subgraph {g} has {ns} scales but {nz} zero points")
                lo, hi = _ZP_RANGE.get(ttype, (None, None))
                if lo is not None and any(not lo <= z <= hi for z in qt.ints(3, "<q")):
                    # XNNPACK rejects such a zero point, and LiteRT's error path after that rejection has
                    # crashed the process (seen in the fuzzer): refuse it here
                    raise _Bad(f"tensor {t} of subgraph {g} has a zero point outside [{lo}, {hi}] for its type")
                qd = qt.scalar(6, "<i")
                if ns > 1 and not (0 <= qd < max(1, len(shape)) and (not shape or shape[qd] == ns)):
                    raise _Bad(f"tensor {t} of subgraph {g}: per-channel quantization does not fit its shape")
        for kind, idx in (("input", sg.ints(1)), ("output", sg.ints(2))):
            if any(not 0 <= i < nt for i in idx):
                raise _Bad(f"subgraph {g} {kind} indices {idx[:8]} out of range (0..{nt - 1})")
        for o, op in enumerate(sg.tables(3)):  # Operator: 0 opcode_index, 1 inputs, 2 outputs, 8 intermediates
            if op.scalar(0, "<I") >= n_codes:
                raise _Bad(f"operator {o} of subgraph {g} names operator code {op.scalar(0, '<I')} of {n_codes}")
            for field in (1, 2, 8):
                idx = op.ints(field)
                if any(not -1 <= i < nt for i in idx):
                    raise _Bad(f"operator {o} of subgraph {g} uses tensor indices {idx[:8]} out of range")
