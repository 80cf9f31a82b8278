"""TOML config files for the CLI: keys mirror the long options; unknown keys are rejected with a hint."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable

from edgeport_runtime.errors import UsageError, close_match_hint


def load_config(path: str, allowed: Iterable[str], section: str = "") -> Dict[str, Any]:
    """Read a TOML file and return its keys (dashes folded to underscores).

    If ``section`` is given and present as a table (e.g. ``[train]``), only that table is read.

    Raises:
        UsageError: missing/unparsable file or an unknown key (with the closest valid key).
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: file not found.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: cannot read it ({e}).") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path}: not valid TOML ({e}).") from None
    if section and isinstance(data.get(section), dict):
        data = data[section]
    allowed = set(allowed)
    out = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in allowed:
            raise UsageError(f"--config {path}: unknown key {key!r}.{close_match_hint(k, allowed)} "
                             f"Valid keys: {', '.join(sorted(allowed))}.")
        out[k] = value
    return out
