"""Interpreter backends: found and chosen by lookup in the backend table (:mod:`.table`).

A backend opens a model file and returns a session with ``inputs``/``outputs`` (TensorSpec lists) and
``run(arrays) -> arrays``. Sessions are not thread-safe; :class:`edgeport_runtime.model.Model` serialises calls.
"""
from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from typing import List, Optional

from ..errors import BackendUnavailableError, EdgeportError, ModelLoadError, UsageError, unknown_name
from ..kinds import Quantization
from .table import BACKENDS, Backend

__all__ = ["BACKENDS", "Backend", "is_installed", "installed_backends", "runnable_backends", "install_hint",
           "choose_backend", "open_session"]


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


def runnable_backends(fmt: str, quantization: Optional[str] = None) -> List[str]:
    """Installed backends that run ``fmt`` artifacts (of ``quantization``, when given), in preference order."""
    return [n for n in installed_backends() if BACKENDS[n].runs(fmt, quantization)]


def install_hint(fmt: str, machine: Optional[str] = None, quantization: Optional[str] = None) -> str:
    """What to pip install on this machine (and Python) to run ``fmt`` artifacts."""
    machine = machine or platform.machine()
    rows = [b for b in BACKENDS.values() if b.runs(fmt, quantization) and b.has_wheels(machine, sys.version_info)]
    if not rows:
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        others = [b for b in BACKENDS.values() if b.format != fmt and b.has_wheels(machine, sys.version_info)]
        return (f"no backend for {fmt} artifacts has wheels for {machine} (Python {py}); "
                + (f"use a .{others[0].format} artifact with `{others[0].install}`." if others
                   else "no interpreter wheel exists for this platform."))
    return f"install one with `{rows[0].install}` (backend {rows[0].name})."


def choose_backend(fmt: str, requested: Optional[str] = None, quantization: Optional[str] = None) -> Backend:
    """The backend to run a ``fmt`` artifact: ``requested`` if given, else the first installed one that runs the
    format (and the artifact's ``quantization``, when known).

    Raises:
        UsageError: unknown backend name, or one that cannot run this format or quantization.
        BackendUnavailableError: nothing installed can run it (the message names the pip extra).
    """
    if requested is not None:
        if requested not in BACKENDS:
            raise unknown_name("backend", requested, BACKENDS)
        b = BACKENDS[requested]
        if b.format != fmt:
            ok = [x.name for x in BACKENDS.values() if x.format == fmt]
            raise UsageError(f"backend {requested!r} runs {b.format} artifacts, not {fmt}; use {', '.join(ok)}.")
        if quantization is not None and not b.runs(fmt, quantization):
            ok = [x.name for x in BACKENDS.values() if x.runs(fmt, quantization)]
            raise UsageError(f"backend {requested!r} cannot run this {Quantization(quantization).description} "
                             f"artifact ({b.why_not(quantization)}); use {', '.join(ok)} or another artifact.")
        if not is_installed(requested):
            raise BackendUnavailableError(f"backend {requested!r} is not installed ({b.module} not importable); "
                                          f"install it with `{b.install}`.")
        return b
    for name in installed_backends():
        if BACKENDS[name].runs(fmt, quantization):
            return BACKENDS[name]
    what = f"{fmt} artifacts" if quantization is None else \
        f"{Quantization(quantization).description} {fmt} artifacts"
    raise BackendUnavailableError(f"no installed backend can run {what}; "
                                  f"{install_hint(fmt, quantization=quantization)}")


def open_session(backend: Backend, path: str, num_threads: int):
    """Open ``path`` with ``backend`` and return its session.

    Raises:
        ModelLoadError: the interpreter cannot read the file (every failure, as one line).
    """
    impl = importlib.import_module(backend.implementation)
    try:
        return impl.open_session(backend, path, num_threads)
    except EdgeportError:
        raise
    except Exception as e:  # UnicodeDecodeError, IndexError, ... from a corrupt file's metadata: one line
        msg = " ".join(str(e).split())[:200]
        raise ModelLoadError(f"{path}: {backend.name} cannot load it ({type(e).__name__}: {msg}); the file is "
                             "corrupt, truncated or not a model edgeport wrote.") from None
