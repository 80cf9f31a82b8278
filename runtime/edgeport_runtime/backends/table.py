"""The backend table: one row per interpreter backend, the single place its facts live.

Everything else derives from these rows: backend selection and install hints (backends/__init__.py), which
artifacts a bundle can run here (model.py), smoke tolerances on a device (smoke.py), the backends parity runs
(edgeport.check.parity), what a device profile's wheels provide and what its wheelhouse fetches
(edgeport.devices.profiles / wheelhouse). Adding a backend = its module (``open_session(backend, path,
num_threads)`` returning a session), a row here, its pip extra in runtime/pyproject.toml (a test checks the two
agree) and the device profiles that install it.

Preference order within a format is table order: LiteRT before tflite-runtime (faster, current, and it reads the
dynamic-range models TF 2.21 writes, whose FULLY_CONNECTED op version 12 tflite-runtime 2.14 cannot load); the
pure-numpy backend last (used where nothing compiled is installed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

from ..kinds import Format, Quantization

# float outputs on another CPU: other SIMD summation orders (observed <= 5e-6 on emulated ARM)
DEFAULT_FLOAT_ATOL = 1e-5
ANY_MACHINE = "*"  # pure-Python wheels: every platform.machine()
ALL_KINDS = frozenset(Quantization)


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


@dataclass(frozen=True)
class Backend:
    """One row of the backend table.

    ``platforms`` maps a ``platform.machine()`` value (or :data:`ANY_MACHINE`) to the Python versions PyPI has
    wheels of the backend for there, as ``"3.10-3.13"`` (inclusive) or ``"3.9-"`` (open-ended).
    """

    name: str
    format: Format  # the artifact format it runs
    module: str  # the Python module that must be importable for the backend to be installed
    implementation: str  # the module with open_session(backend, path, num_threads)
    extra: str  # the edgeport-runtime pip extra that installs it
    requirements: Tuple[str, ...]  # what that extra pip installs (runtime/pyproject.toml must say the same)
    wheel: str  # the PyPI distribution a device profile pins to get this backend ([wheels] in the .toml)
    platforms: Mapping[str, str]  # machine -> Python versions with wheels
    quantizations: FrozenSet[Quantization]  # the artifact kinds it runs
    int8_steps: float  # smoke tolerance: int8 outputs may differ from the build machine's by this many steps
    float_atol: float = DEFAULT_FLOAT_ATOL  # smoke tolerance for float outputs
    companions: Tuple[str, ...] = ()  # wheels it needs besides numpy that pip must fetch with it
    limits: str = ""  # why it lacks a quantization kind (said when refusing one)

    def python_range(self, machine: str) -> Optional[Tuple[Tuple[int, ...], Optional[Tuple[int, ...]]]]:
        """(lowest, highest or None) Python with wheels on ``machine``, or None when there are no wheels."""
        spec = self.platforms.get(machine, self.platforms.get(ANY_MACHINE))
        if spec is None:
            return None
        lo, _, hi = spec.partition("-")
        return _version(lo), (_version(hi) if hi else None)

    def has_wheels(self, machine: str, python: Tuple[int, ...]) -> bool:
        """Whether pip finds this backend for ``machine`` and Python ``python`` (major, minor)."""
        rng = self.python_range(machine)
        if rng is None:
            return False
        lo, hi = rng
        return tuple(python[:2]) >= lo[:2] and (hi is None or tuple(python[:2]) <= hi[:2])

    def runs(self, fmt: str, quantization: Optional[str] = None) -> bool:
        """Whether it runs artifacts of ``fmt`` (and ``quantization`` when given)."""
        if self.format != fmt:
            return False
        if quantization is None:
            return True
        try:  # an Enum hashes by member name: look the kind up as a member, not as the raw string
            return Quantization(quantization) in self.quantizations
        except ValueError:  # a kind this runtime does not know
            return False

    def why_not(self, quantization: str) -> str:
        """One clause saying why it cannot run ``quantization`` artifacts."""
        q = Quantization(quantization)
        return self.limits or f"{self.name} does not run {q.description} artifacts"

    @property
    def install(self) -> str:
        """The pip command that installs it."""
        return f"pip install edgeport-runtime[{self.extra}]"


_X86_ARM64 = ("x86_64", "aarch64", "arm64")  # arm64: macOS on Apple silicon

BACKENDS: Dict[str, Backend] = {
    b.name: b for b in [
        Backend("litert", Format.TFLITE, "ai_edge_litert.interpreter", "edgeport_runtime.backends.tflite",
                "litert", ("ai-edge-litert>=2.3.0",), "ai-edge-litert",
                {m: "3.10-3.13" for m in _X86_ARM64}, ALL_KINDS,
                # integer kernels: bit-identical across x86 and ARM (observed on emulated cortex-a53/a72/a76)
                int8_steps=0),
        Backend("tflite-runtime", Format.TFLITE, "tflite_runtime.interpreter", "edgeport_runtime.backends.tflite",
                # 2.14 is the last release: Python 3.9-3.11 only, built against numpy 1.x
                "tflite", ("tflite-runtime>=2.13,<2.15", "numpy<2"), "tflite-runtime",
                {"x86_64": "3.9-3.11", "aarch64": "3.9-3.11", "armv7l": "3.9-3.11"},
                frozenset({Quantization.FLOAT32, Quantization.FLOAT16, Quantization.INT8}),
                # its ARM kernels round requantization differently from x86 LiteRT: a few units were observed
                # on larger models
                int8_steps=4,
                limits="tflite-runtime 2.14 cannot load dynamic-range models made by TF 2.21 "
                       "(FULLY_CONNECTED op version 12)"),
        Backend("onnxruntime", Format.ONNX, "onnxruntime", "edgeport_runtime.backends.onnx", "onnx",
                ("onnxruntime>=1.16",), "onnxruntime", {m: "3.10-3.13" for m in _X86_ARM64},
                frozenset({Quantization.FLOAT32, Quantization.INT8}),
                int8_steps=0),  # integer QDQ kernels: bit-identical across x86 and emulated ARM
        # pure numpy (reads the flatbuffer with the `tflite` schema package): wheels are pure Python, so it runs
        # wherever numpy does (32-bit Pi OS trixie, Python 3.13+, riscv64)
        Backend("numpy", Format.TFLITE, "tflite.Model", "edgeport_runtime.backends.numpy_backend", "numpy",
                ("tflite>=2.18,<3", "flatbuffers>=2.0"), "tflite", {ANY_MACHINE: "3.9-"}, ALL_KINDS,
                int8_steps=0,  # reproduces LiteRT's rounding op by op: tested bit-identical on every zoo model
                companions=("flatbuffers",)),
    ]
}
