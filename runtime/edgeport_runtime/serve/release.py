"""What `edgeport-run serve` was pointed at: a bundle, an archive, a model file, or a device release directory.

A release directory (``~/edgeport/releases/<id>``, or ``~/edgeport/current``) holds the bundle in ``bundle/``
and, when the device chose the fastest passing artifact, ``selected.json`` with ``artifact``, ``backend`` and
``threads``: the service runs that choice unless the command line names its own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

from ..errors import UsageError
from ..manifest import MANIFEST_NAME

SELECTION = "selected.json"
_KINDS = {"artifact": str, "backend": str, "threads": int}


def locate(path: str) -> Tuple[str, Dict[str, Any]]:
    """(what to load, the release's selection or {}).

    Raises:
        UsageError: a selected.json that is not a JSON object of the expected types.
    """
    p = Path(path)
    if not p.is_dir() or (p / MANIFEST_NAME).is_file() or not (p / "bundle" / MANIFEST_NAME).is_file():
        return path, {}
    sel_path = p / SELECTION
    if not sel_path.is_file():
        return str(p / "bundle"), {}
    try:
        doc = json.loads(sel_path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{sel_path}: unreadable ({' '.join(str(e).split())[:150]}); expected the JSON the "
                         "device's selection wrote. Delete it or pass --artifact/--backend/--threads.") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{sel_path}: expected a JSON object with artifact, backend, threads.")
    sel = {}
    for key, kind in _KINDS.items():
        v = doc.get(key)
        if v is None:
            continue
        if type(v) is not kind or (kind is int and v < 1):
            raise UsageError(f"{sel_path}: {key} = {v!r}; expected {'an integer >= 1' if kind is int else 'a name'}.")
        sel[key] = v
    return str(p / "bundle"), sel
