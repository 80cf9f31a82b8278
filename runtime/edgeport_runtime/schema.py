"""Type checks for manifest fields and the path rule every manifest/archive/profile path must follow.

A manifest is untrusted input (it arrives with a bundle that may have been copied, edited or crafted), so each
field is checked for its type before anything uses it, and each path in it must be relative and stay inside the
bundle. The failure is one :class:`IntegrityError` / :class:`ModelLoadError` naming the field.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import IntegrityError, ModelLoadError

MAX_JSON_DEPTH = 32  # the schema needs ~6 levels; deeper nesting is either a mistake or an attack
MAX_DIM = 2 ** 31 - 1  # interpreters index tensors with int32
MAX_STR = 1024  # names, dtypes, paths: longer values are corrupt and would flood one-line error messages


def relative_path_error(rel: Any) -> Optional[str]:
    """Why ``rel`` is not an acceptable relative path (string rules only), or None when it is."""
    if not isinstance(rel, str):
        return f"expected a relative path (string), got {type(rel).__name__} {_short(rel)}"
    if not rel or rel.strip() in ("", "."):
        return "expected a relative file path, got an empty path"
    if "\0" in rel:
        return "the path contains a NUL byte"
    if "\\" in rel:
        return f"the path {_short(rel)} contains a backslash; use '/' separators"
    if rel.startswith("/") or os.path.isabs(rel):
        return f"the path {_short(rel)} is absolute; expected a path relative to the bundle"
    if ".." in rel.split("/"):
        return f"the path {_short(rel)} contains '..'; expected a path inside the bundle"
    return None


def contained_path(base: os.PathLike, rel: Any, what: str) -> Path:
    """Resolve ``rel`` (a path read from a manifest, profile, archive or config) inside the directory ``base``.

    The path must be a non-empty relative string without ``..``, backslashes or NUL, and must still lie inside
    ``base`` after every symlink is resolved. Nothing is opened or read. Stable public API: the toolkit and the
    device code call it for every path they take from a file.

    Args:
        base: the directory the path is relative to (e.g. the bundle directory).
        rel: the path as written in the file.
        what: which field it came from, for the message (e.g. "artifact 'tflite-int8' path").

    Returns:
        The resolved absolute path (symlinks followed) inside ``base``.

    Raises:
        IntegrityError: the path is not a string, is absolute, escapes ``base`` or is malformed.
    """
    why = relative_path_error(rel)
    if why:
        raise IntegrityError(f"{what}: {why}; refusing a path that could lead outside {base} (the file "
                             "naming it is corrupt or was tampered with).")
    root = os.path.realpath(os.fspath(base))
    target = os.path.realpath(os.path.join(root, rel))
    if not target.startswith(root.rstrip(os.sep) + os.sep):
        raise IntegrityError(f"{what}: {_short(rel)} resolves to {target}, outside {root} (a symlink out of the "
                             "bundle?); refusing to read it.")
    return Path(target)


def json_depth_ok(obj: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``obj`` (parsed JSON) nests no deeper than ``limit`` (checked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, depth + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, depth + 1) for v in o)
    return True


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


class Fields:
    """Typed access to one JSON object of the manifest; each getter raises a one-line error naming the field."""

    def __init__(self, d: Any, where: str):
        if not isinstance(d, dict):
            raise ModelLoadError(f"{where}: expected a JSON object, got {_type_name(d)} {_short(d)}.")
        self.d, self.where = d, where

    def _bad(self, key: str, want: str) -> ModelLoadError:
        v = self.d.get(key)
        return ModelLoadError(f"{self.where}: field {key!r} must be {want}, got {_type_name(v)} {_short(v)}; "
                              "the manifest is corrupt, re-run `edgeport convert`.")

    def missing(self, key: str) -> ModelLoadError:
        return ModelLoadError(f"{self.where} is missing field {key!r}; the manifest is corrupt, "
                              "re-run `edgeport convert`.")

    _ABSENT = object()

    def _get(self, key: str, required: bool, nullable: bool) -> Any:
        """The prologue every getter shares: ``_ABSENT`` when the key is missing (or null where allowed)."""
        if key not in self.d:
            if required:
                raise self.missing(key)
            return self._ABSENT
        v = self.d[key]
        return self._ABSENT if v is None and nullable else v

    def str(self, key: str, default: Optional[str] = None, required: bool = False, nullable: bool = False):
        v = self._get(key, required, nullable)
        if v is self._ABSENT:
            return default if key not in self.d else None
        if not isinstance(v, str) or len(v) > MAX_STR:
            raise self._bad(key, f"a string of at most {MAX_STR} characters" + (" or null" if nullable else ""))
        return v

    def int(self, key: str, required: bool = False, nullable: bool = False, minimum: int = 0):
        v = self._get(key, required, nullable)
        if v is self._ABSENT:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > 2 ** 63:
            raise self._bad(key, f"an integer >= {minimum}" + (" or null" if nullable else ""))
        return v

    def float(self, key: str, nullable: bool = True, positive: bool = False):
        v = self._get(key, False, nullable)
        if v is self._ABSENT:  # absent counts as null here (every float field is optional)
            v = None
            if nullable:
                return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (positive and v <= 0):
            raise self._bad(key, ("a finite number > 0" if positive else "a finite number")
                            + (" or null" if nullable else ""))
        return float(v)

    def bool(self, key: str):
        """An optional true/false field (absent or null: None)."""
        v = self._get(key, False, True)
        if v is self._ABSENT:
            return None
        if not isinstance(v, bool):
            raise self._bad(key, "true, false or null")
        return v

    def dict(self, key: str, nullable: bool = True) -> Optional[Dict[str, Any]]:
        v = self._get(key, False, True)
        if v is self._ABSENT:
            if key in self.d and not nullable:
                v = None  # null where an object is required
            else:
                return None
        if not isinstance(v, dict):
            raise self._bad(key, "a JSON object" + (" or null" if nullable else ""))
        return v

    def list(self, key: str, required: bool = False) -> Optional[List[Any]]:
        v = self._get(key, required, not required)
        if v is self._ABSENT:
            return None
        if not isinstance(v, list):
            raise self._bad(key, "a JSON list")
        return v

    def path(self, key: str, nullable: bool = True, required: bool = False) -> Optional[str]:
        """A relative path field: string rules of :func:`contained_path`, checked before any file is touched."""
        v = self.str(key, required=required, nullable=nullable)
        if v is None:
            return None
        why = relative_path_error(v)
        if why:
            raise IntegrityError(f"{self.where}: field {key!r}: {why}; the manifest is corrupt or was "
                                 "tampered with.")
        return v

    def shape(self, key: str) -> List[Optional[int]]:
        v = self.list(key, required=True)
        if len(v) > 16 or not all(d is None or (isinstance(d, int) and not isinstance(d, bool)
                                                and 0 <= d <= MAX_DIM) for d in v):
            raise self._bad(key, "a list of at most 16 dimensions, each an integer >= 0 or null")
        return list(v)
