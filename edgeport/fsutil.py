"""Output directories that appear whole or not at all."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeport_runtime.errors import UsageError


def check_out_dir(out: os.PathLike, force: bool) -> Path:
    """Refuse an existing ``out`` without ``force`` and a parent we cannot write; return ``out`` as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory; choose another path.")
    if out.exists() and not force:
        raise UsageError(f"--out {out}: already exists; pass --force to replace it, or choose another directory.")
    parent = out.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: cannot create parent directory {parent} (a file is in the way).")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise UsageError(f"--out {out}: cannot create parent directory {parent} ({e.strerror}).") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: directory {parent} is not writable; choose a writable location.")
    return out


@contextlib.contextmanager
def staged_dir(out: os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp directory beside ``out``; on success it replaces ``out`` in one rename, on error it vanishes.

    A crash, Ctrl-C or exception therefore never leaves a half-written ``out``; with ``force`` an existing
    ``out`` is replaced only after the new one is complete.
    """
    out = check_out_dir(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=str(out.resolve().parent)))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; the result should look like any mkdir
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.resolve().parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
