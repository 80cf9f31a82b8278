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


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a table"}


def _matches(value: Any, kind: Any) -> bool:
    """Whether a TOML value fits ``kind``: a type, a tuple of alternatives, or ("list", item type)."""
    if isinstance(kind, tuple) and kind and kind[0] == "list":
        return isinstance(value, list) and all(_matches(v, kind[1]) for v in value)
    if isinstance(kind, tuple):
        return any(_matches(value, k) for k in kind)
    if kind is float:  # TOML writes 1 for 1.0; bool is an int subclass in Python but not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    if isinstance(kind, tuple) and kind and kind[0] == "list":
        return f"a list of {_describe(kind[1]).split(' ', 1)[1]}s"
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    return _TYPE_WORDS.get(kind, getattr(kind, "__name__", str(kind)))


def check_types(values: Dict[str, Any], types: Dict[str, Any], where: str) -> Dict[str, Any]:
    """Check each config value against ``types`` (key -> type, tuple of types, or ("list", type)).

    Raises:
        UsageError: naming the key, the expected type and the value received, e.g.
            ``--config t.toml: epochs must be an integer, got 'three' (a string).``
    """
    for key, value in values.items():
        kind = types.get(key)
        if kind is not None and not _matches(value, kind):
            raise UsageError(f"{where}: {key.replace('_', '-')} must be {_describe(kind)}, got {value!r} "
                             f"({_describe(type(value))}). Fix the value in the config file.")
    return values
