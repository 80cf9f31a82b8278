"""Containment of paths read from manifests, archives and configs (devices/ side).

Same behaviour as ``edgeport_runtime.manifest.contained_path``: a path from a file we did not write ourselves
must be relative and, after symlinks are resolved, stay inside its base directory. Otherwise the file could make
`edgeport bundle` / `edgeport deploy` read or write anywhere (``../../../../etc/x``).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from edgeport_runtime.errors import IntegrityError


def contained_path(base: os.PathLike, rel: str, what: str) -> Path:
    """``base / rel`` resolved, after checking ``rel`` is relative and stays inside ``base``.

    Raises:
        IntegrityError: ``rel`` is not a non-empty string, is absolute, or resolves (also through symlinks)
            outside ``base``.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise IntegrityError(f"{what}: {rel!r} is not a file name; expected a relative path inside {base}.")
    if PurePosixPath(rel).is_absolute() or Path(rel).is_absolute() or "\\" in rel:
        raise IntegrityError(f"{what}: {rel!r} is an absolute path; a bundle lists files relative to its "
                             f"directory. The manifest was edited or crafted: re-run `edgeport convert`.")
    root = Path(base).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise IntegrityError(f"{what}: {rel!r} points outside {base} (to {target}); a bundle may only list files "
                             "inside its directory. The manifest was edited or crafted: re-run `edgeport convert`.")
    if target == root:
        raise IntegrityError(f"{what}: {rel!r} is the directory {base} itself, not a file inside it.")
    return target
