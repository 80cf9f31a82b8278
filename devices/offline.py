"""`edgeport bundle`: one archive with everything a device needs to install and run a bundle offline.

Archive layout (a single top directory)::

    bundle/        model files, check files and a manifest listing only what this profile can run
    wheels/        the edgeport-runtime wheel + the profile's exact backend (and numpy) wheels
    install.sh     offline venv install from wheels/ (sh install.sh [VENV])
    device.env     EXTRAS and SYSTEM_NUMPY for install.sh
    profile.toml   the profile the archive was made for
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from edgeport_runtime.errors import UsageError
from edgeport_runtime.manifest import read_manifest, write_manifest

from .profiles import BACKEND_WHEELS, PROFILE_DIR, Profile
from .wheelhouse import runtime_wheel, wheelhouse

HERE = Path(__file__).parent


@dataclass
class OfflineBundle:
    """What :func:`make_offline_bundle` wrote and what it left out (with reasons)."""

    path: Path
    profile: str
    artifacts: List[str]
    left_out: List[str] = field(default_factory=list)
    wheels: List[str] = field(default_factory=list)


def _stage(bundle_dir: Path, profile: Profile, dest: Path, warn) -> OfflineBundle:
    man = read_manifest(bundle_dir)
    keep, left_out = [], []
    for art in man.artifacts:
        ok, why = profile.can_run(art.format, art.quantization)
        if ok:
            keep.append(art)
        else:
            left_out.append(f"{art.name}: {why}")
            warn(f"warning: leaving out {art.name} for {profile.name}: {why}")
    if not keep:
        raise UsageError(f"{bundle_dir}: {profile.name} can run none of the artifacts ({'; '.join(left_out)}).")
    bdest = dest / "bundle"
    bdest.mkdir(parents=True)
    for art in keep:
        shutil.copy2(bundle_dir / art.path, bdest / art.path)
        if art.check_outputs:
            shutil.copy2(bundle_dir / art.check_outputs, bdest / art.check_outputs)
    for key in ("inputs", "keras_outputs"):
        if man.check.get(key):
            shutil.copy2(bundle_dir / man.check[key], bdest / man.check[key])
    man.artifacts = keep
    if man.default_artifact not in {a.name for a in keep}:
        man.default_artifact = next((a.name for a in keep if a.quantization == "int8"), keep[0].name)
    write_manifest(bdest, man)
    wdir = dest / "wheels"
    wdir.mkdir()
    runtime_wheel(wdir)
    for whl in wheelhouse(profile).glob("*.whl"):
        shutil.copy2(whl, wdir / whl.name)
    extras = ",".join(BACKEND_WHEELS[w][2] for w in profile.wheels if w in BACKEND_WHEELS)
    (dest / "device.env").write_text(f"EXTRAS={extras}\nSYSTEM_NUMPY={int(profile.system_numpy)}\n")
    shutil.copy2(HERE / "install.sh", dest / "install.sh")
    src_profile = PROFILE_DIR / f"{profile.name}.toml"
    if src_profile.is_file():
        shutil.copy2(src_profile, dest / "profile.toml")
    return OfflineBundle(dest, profile.name, [a.name for a in keep], left_out, sorted(p.name for p in wdir.iterdir()))


def make_offline_bundle(bundle_dir: str, profile: Profile, out: Optional[str] = None, force: bool = False,
                        warn=print) -> OfflineBundle:
    """Write ``out`` (default BUNDLE_DIR-PROFILE.tar.gz): model files, manifest, runtime wheel, wheelhouse.

    Artifacts the profile cannot run are left out with a warning (e.g. dynamic-range models on tflite-runtime,
    ONNX on armv7). The archive is written to a temp name and renamed: never half-written.
    """
    bdir = Path(bundle_dir)
    out_path = Path(out) if out else bdir.parent / f"{bdir.name}-{profile.name}.tar.gz"
    if out_path.exists() and not force:
        raise UsageError(f"{out_path}: already exists; pass --force to replace it.")
    top = f"edgeport-{bdir.name}-{profile.name}"
    with tempfile.TemporaryDirectory() as d:
        staged = _stage(bdir, profile, Path(d) / top, warn)
        fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=str(out_path.parent.resolve()))
        os.close(fd)
        try:
            with tarfile.open(tmp, "w:gz") as t:
                t.add(Path(d) / top, arcname=top)
            os.replace(tmp, out_path)
        except BaseException:
            os.unlink(tmp)
            raise
    staged.path = out_path
    return staged


def archive_summary(path: Path) -> dict:
    """Names and sizes inside an offline bundle archive (for tests and `edgeport bundle` output)."""
    with tarfile.open(path) as t:
        return {m.name: m.size for m in t.getmembers() if m.isfile()}


__all__ = ["make_offline_bundle", "OfflineBundle", "archive_summary"]
