"""Wheelhouses for offline installs: the exact wheels a profile's platform needs, fetched once and cached."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

from edgeport_runtime.errors import EdgeportError

from ..core.paths import default_cache_dir
from .profiles import Profile

ROOT = Path(__file__).resolve().parents[1]
# Pins for what devices install (backends, numpy, Pillow and what they pull in): the versions the runtime's own
# test environment runs with, kept in their own file so test tools never constrain a device.
CONSTRAINTS = ROOT / "requirements" / "device-constraints.txt"


# `edgeport-run serve` (the runtime's [serve] extra) goes onto every device: pure-Python wheels, fetched with their
# dependencies at the versions CONSTRAINTS pins, whatever the profile's platform.
SERVE_REQUIREMENTS = ["starlette", "uvicorn", "prometheus-client"]


class WheelhouseError(EdgeportError):
    """pip could not fetch the wheels a profile needs."""


def _pip_download(profile: Profile, requirements: List[str], dest: Path, no_deps: bool) -> None:
    py = profile.python.replace(".", "")
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", profile.python,
            "--abi", f"cp{py}", "--dest", str(dest)]
    for tag in profile.pip_platforms:
        args += ["--platform", tag]
    if no_deps:
        args.append("--no-deps")
    elif CONSTRAINTS.is_file():
        args += ["--constraint", str(CONSTRAINTS)]
    out = subprocess.run(args + requirements, capture_output=True, text=True)
    if out.returncode != 0:
        err = [ln for ln in out.stderr.splitlines() if ln.startswith("ERROR")]
        raise WheelhouseError(f"pip could not fetch {', '.join(requirements)} for {profile.name} "
                              f"({', '.join(profile.pip_platforms)}, Python {profile.python}): "
                              f"{(err or out.stderr.splitlines()[-1:] or ['?'])[0]}")


def wheelhouse(profile: Profile) -> Path:
    """A directory of wheels that installs the profile's backend (and numpy unless the OS provides it) and the
    service (`edgeport-run serve`).

    Cached under ~/.cache/edgeport/wheelhouses/<profile>-<hash of its wheels>; a second call downloads nothing.
    """
    reqs = [f"{name}=={version}" for name, version in sorted(profile.wheels.items())]
    pins = CONSTRAINTS.read_text() if CONSTRAINTS.is_file() else ""
    key = hashlib.sha256(("|".join(reqs + SERVE_REQUIREMENTS + profile.pip_platforms + [profile.python, pins])
                          ).encode()).hexdigest()[:12]
    dest = default_cache_dir() / "wheelhouses" / f"{profile.name}-{key}"
    if (dest / ".complete").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # With the OS's numpy (armv7), the interpreter wheel comes alone: its numpy dependency is met by the OS.
    _pip_download(profile, reqs, tmp, no_deps=profile.system_numpy)
    _pip_download(profile, SERVE_REQUIREMENTS, tmp, no_deps=False)  # pure Python: never met by the OS
    (tmp / ".complete").write_text("\n".join(reqs + SERVE_REQUIREMENTS) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _runtime_sources() -> List[Path]:
    src = ROOT / "runtime"
    return [src / "pyproject.toml"] + sorted((src / "edgeport_runtime").rglob("*.py"))


def runtime_wheel(dest: Path) -> Path:
    """The edgeport-runtime wheel for the current runtime/ sources, copied into ``dest``; return its path.

    Built once per state of the sources (keyed by their sha256) into the cache, from a temporary copy of runtime/,
    so building never writes build/ or *.egg-info into the source tree.
    """
    h = hashlib.sha256()
    for f in _runtime_sources():
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    cache = default_cache_dir() / "runtime-wheels" / h.hexdigest()[:16]
    wheels = sorted(cache.glob("edgeport_runtime-*.whl"))
    if not wheels:
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "runtime"
            shutil.copytree(ROOT / "runtime", src, ignore=shutil.ignore_patterns(
                "build", "*.egg-info", "__pycache__", "tests", "dist"))
            out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                                  "--no-deps", "--no-build-isolation", "-w", str(Path(d) / "wheel"), str(src)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise WheelhouseError(f"building the edgeport-runtime wheel failed: {out.stderr.strip()[-300:]}")
            built = sorted((Path(d) / "wheel").glob("edgeport_runtime-*.whl"))
            if not built:
                raise WheelhouseError("building the edgeport-runtime wheel produced no wheel.")
            tmp = cache.with_name(cache.name + f".partial-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            shutil.copy2(built[-1], tmp / built[-1].name)
            try:
                tmp.rename(cache)  # whole or not at all; a concurrent build that won the race is just as good
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        wheels = sorted(cache.glob("edgeport_runtime-*.whl"))
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(wheels[-1], dest / wheels[-1].name))
