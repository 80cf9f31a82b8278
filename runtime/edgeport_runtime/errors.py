"""Error types shared by edgeport-runtime and the edgeport toolkit.

Every error edgeport raises on purpose derives from :class:`EdgeportError`. A message says what failed,
the value received, what was expected and what to do next. The CLIs print the message on one line and exit
with ``exit_code`` (2 = bad usage or bad input, 1 = a quality gate failed).
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


class EdgeportError(Exception):
    """Base class of every deliberate edgeport error. ``exit_code`` is what a CLI exits with."""

    exit_code = 2


class UsageError(EdgeportError):
    """A bad option, name or argument on the command line or in a config file."""


class InputError(EdgeportError):
    """Input data (arrays, files, datasets) that does not match what was expected."""


class ModelLoadError(EdgeportError):
    """A model or bundle that cannot be read: missing, corrupt, truncated, unsupported."""


class ModelRunError(ModelLoadError):
    """A model that loaded but fails when the interpreter runs it (a corrupt or unsupported graph)."""


class IntegrityError(ModelLoadError):
    """A file whose sha256 does not match the manifest, a manifest of an unknown schema, or a path (in a
    manifest, profile or archive) that is absolute or leads outside its directory."""


class BackendUnavailableError(EdgeportError):
    """No installed interpreter can run the artifact; the message names the pip extra to install."""


class GateFailed(EdgeportError):
    """A quality gate (parity, accuracy) failed. Exit code 1, unlike bad input."""

    exit_code = 1


def close_match_hint(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def unknown_name(kind: str, value: str, choices: Iterable[str], what_to_do: Optional[str] = None) -> UsageError:
    """Build the standard 'unknown X' error: value received, valid choices, close match."""
    choices = sorted(choices)
    msg = f"unknown {kind} {value!r}.{close_match_hint(value, choices)} Valid: {', '.join(choices)}."
    if what_to_do:
        msg += " " + what_to_do
    return UsageError(msg)
