"""The artifact formats and quantization kinds, as enums shared by the manifest, the backend table and the toolkit.

Both are ``str`` enums: a member equals its value (``Format.TFLITE == "tflite"``) and serialises to it in JSON,
so manifests stay plain strings; code compares and dispatches on members, never on string literals.
"""
from __future__ import annotations

from enum import Enum
from typing import Optional


class _StrEnum(str, Enum):
    def __str__(self) -> str:  # f"{Format.TFLITE}" is "tflite" on every Python (3.12 changed the default)
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Format(_StrEnum):
    """The file format of an artifact; the runtime picks a backend that runs it."""

    TFLITE = "tflite"
    ONNX = "onnx"

    @property
    def suffix(self) -> str:
        """The file name suffix artifacts of this format have."""
        return "." + self.value

    @classmethod
    def from_suffix(cls, suffix: str) -> Optional["Format"]:
        """The format of a file ending in ``suffix`` (case-insensitive), or None."""
        return next((f for f in cls if f.suffix == suffix.lower()), None)


class Quantization(_StrEnum):
    """What an artifact's weights and arithmetic are (the manifest's ``quantization`` field)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"  # float16 weights, float32 arithmetic
    DYNAMIC_INT8 = "dynamic-int8"  # int8 weights, float I/O, activations quantized on the fly
    INT8 = "int8"  # full integer: int8 weights, activations, inputs and outputs

    @property
    def description(self) -> str:
        """A short human name (for messages and tables)."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {Quantization.FLOAT32: "float32", Quantization.FLOAT16: "float16 weights",
                 Quantization.DYNAMIC_INT8: "dynamic-range", Quantization.INT8: "full int8"}

# tensor dtypes that hold integers standing for real values (scale and zero point set)
QUANT_DTYPES = ("int8", "uint8", "int16")
