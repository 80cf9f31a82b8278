"""Wheelhouses for offline installs: the exact wheels a profile's platform needs, fetched once and cached."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from edgeport_runtime.errors import EdgeportError

from ..train.datasets import default_cache_dir
from .profiles import Profile

ROOT = Path(__file__).resolve().parents[1]
# Transitive dependencies of the backends, pinned to what the runtime's own tests run with.
CONSTRAINTS = ROOT / "requirements" / "runtime-test.txt"


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
    """A directory of wheels that installs the profile's backend (and numpy unless the OS provides it).

    Cached under ~/.cache/edgeport/wheelhouses/<profile>-<hash of its wheels>; a second call downloads nothing.
    """
    reqs = [f"{name}=={version}" for name, version in sorted(profile.wheels.items())]
    key = hashlib.sha256(("|".join(reqs + profile.pip_platforms + [profile.python])).encode()).hexdigest()[:12]
    dest = default_cache_dir() / "wheelhouses" / f"{profile.name}-{key}"
    if (dest / ".complete").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # With the OS's numpy (armv7), the interpreter wheel comes alone: its numpy dependency is met by the OS.
    _pip_download(profile, reqs, tmp, no_deps=profile.system_numpy)
    (tmp / ".complete").write_text("\n".join(reqs) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def runtime_wheel(dest: Path) -> Path:
    """Build the edgeport-runtime wheel from runtime/ into ``dest`` and return its path."""
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                          "--no-deps", "--no-build-isolation", "-w", str(dest), str(ROOT / "runtime")],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise WheelhouseError(f"building the edgeport-runtime wheel failed: {out.stderr.strip()[-300:]}")
    wheels = sorted(dest.glob("edgeport_runtime-*.whl"))
    if not wheels:
        raise WheelhouseError("building the edgeport-runtime wheel produced no wheel.")
    return wheels[-1]
