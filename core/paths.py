"""Where edgeport keeps what it may reuse between runs: the cache directory (decoded datasets, wheelhouses,
built runtime wheels). Shared ground for every stage, so no stage imports another for a path."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$EDGEPORT_CACHE, else $XDG_CACHE_HOME/edgeport, else ~/.cache/edgeport."""
    if os.environ.get("EDGEPORT_CACHE"):
        return Path(os.environ["EDGEPORT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeport"
