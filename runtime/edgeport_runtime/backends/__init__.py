"""Interpreter backends: one table row per backend, found and chosen by lookup.

A backend opens a model file and returns a session with ``inputs``/``outputs`` (TensorSpec lists) and
``run(arrays) -> arrays``. Sessions are not thread-safe; :class:`edgeport_runtime.model.Model` serialises calls.
"""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import BackendUnavailableError, EdgeportError, ModelLoadError, unknown_name


@dataclass(frozen=True)
class Backend:
    """One row of the backend table."""

    name: str
    format: str  # the artifact format it runs: tflite | onnx
    module: str  # the Python module that must be importable
    implementation: str  # edgeport_runtime.backends.<implementation>
    extra: str  # the edgeport-runtime pip extra that installs it
    machines: Tuple[str, ...]  # platform.machine() values with wheels on PyPI


# Preference order within a format is table order: LiteRT before tflite-runtime (faster, current, and it reads the
# dynamic-range models TF 2.21 writes, whose FULLY_CONNECTED op version 12 tflite-runtime 2.14 cannot load).
BACKENDS: Dict[str, Backend] = {
    b.name: b for b in [
        Backend("litert", "tflite", "ai_edge_litert.interpreter", "tflite", "litert", ("x86_64", "aarch64", "arm64")),
        Backend("tflite-runtime", "tflite", "tflite_runtime.interpreter", "tflite", "tflite",
                ("x86_64", "aarch64", "armv7l")),
        Backend("onnxruntime", "onnx", "onnxruntime", "onnx", "onnx", ("x86_64", "aarch64", "arm64")),
        # pure numpy (reads the flatbuffer with the `tflite` schema package): last, used where nothing compiled is
        Backend("numpy", "tflite", "tflite.Model", "numpy_backend", "numpy",
                ("x86_64", "aarch64", "arm64", "armv7l", "armv6l")),
    ]
}


def is_installed(name: str) -> bool:
    """True when the backend's interpreter module can be imported (checked without importing it)."""
    mod = BACKENDS[name].module
    try:
        return importlib.util.find_spec(mod.split(".")[0]) is not None and (
            "." not in mod or importlib.util.find_spec(mod) is not None)
    except (ImportError, ValueError):
        return False


def installed_backends() -> List[str]:
    """Names of the backends whose interpreter is installed here, in preference order."""
    return [n for n in BACKENDS if is_installed(n)]


def install_hint(fmt: str, machine: Optional[str] = None) -> str:
    """What to pip install on this machine to run ``fmt`` artifacts."""
    machine = machine or platform.machine()
    rows = [b for b in BACKENDS.values() if b.format == fmt and machine in b.machines
            # tflite-runtime stopped at 2.14, which has wheels for Python 3.9-3.11 only
            and not (b.name == "tflite-runtime" and sys.version_info >= (3, 12))]
    if not rows:
        return (f"no backend for {fmt} artifacts has wheels for {machine}; "
                + ("use a .tflite artifact with `pip install edgeport-runtime[tflite]`." if fmt == "onnx"
                   else "no TFLite interpreter wheel exists for this platform."))
    return f"install one with `pip install edgeport-runtime[{rows[0].extra}]` (backend {rows[0].name})."


def choose_backend(fmt: str, requested: Optional[str] = None) -> Backend:
    """The backend to run a ``fmt`` artifact: ``requested`` if given, else the first installed for the format.

    Raises:
        UsageError: unknown backend name, or one that cannot run this format.
        BackendUnavailableError: nothing installed can run it (the message names the pip extra).
    """
    if requested is not None:
        if requested not in BACKENDS:
            raise unknown_name("backend", requested, BACKENDS)
        b = BACKENDS[requested]
        if b.format != fmt:
            from ..errors import UsageError

            ok = [x.name for x in BACKENDS.values() if x.format == fmt]
            raise UsageError(f"backend {requested!r} runs {b.format} artifacts, not {fmt}; use {', '.join(ok)}.")
        if not is_installed(requested):
            raise BackendUnavailableError(f"backend {requested!r} is not installed ({b.module} not importable); "
                                          f"install it with `pip install edgeport-runtime[{b.extra}]`.")
        return b
    for b in BACKENDS.values():
        if b.format == fmt and is_installed(b.name):
            return b
    raise BackendUnavailableError(f"no installed backend can run {fmt} artifacts; {install_hint(fmt)}")


def open_session(backend: Backend, path: str, num_threads: int):
    """Open ``path`` with ``backend`` and return its session.

    Raises:
        ModelLoadError: the interpreter cannot read the file (every failure, as one line).
    """
    impl = importlib.import_module(f"{__name__}.{backend.implementation}")
    try:
        return impl.open_session(backend, path, num_threads)
    except EdgeportError:
        raise
    except Exception as e:  # UnicodeDecodeError, IndexError, ... from a corrupt file's metadata: one line
        msg = " ".join(str(e).split())[:200]
        raise ModelLoadError(f"{path}: {backend.name} cannot load it ({type(e).__name__}: {msg}); the file is "
                             "corrupt, truncated or not a model edgeport wrote.") from None
