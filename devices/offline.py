"""`edgeport bundle`: one archive with everything a device needs to install and run a bundle offline.

Archive layout (a single top directory)::

    bundle/        model files, check files and a manifest listing only what this profile can run
    wheels/        the edgeport-runtime wheel + the profile's exact backend (and numpy) wheels
    install.sh     offline venv install from wheels/ (sh install.sh [VENV])
    device.env     what install.sh checks and installs (arch, Python, extras, OS packages)
    profile.toml   the profile the archive was made for
"""
from __future__ import annotations

import os
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from edgeport_runtime.errors import IntegrityError, UsageError
from edgeport_runtime.manifest import MANIFEST_NAME, contained_path, read_manifest, write_manifest

from ..core.fsutil import check_replaceable_file
from .profiles import OS_PACKAGES, PROFILE_DIR, Profile
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


def device_env(profile: Profile) -> str:
    """device.env for install.sh: shell assignments of values the profile schema already restricted to
    [A-Za-z0-9._,-] (quoted anyway)."""
    values = {"PROFILE": profile.name, "ARCH": profile.arch, "PYTHON_VERSION": profile.python,
              "EXTRAS": ",".join(profile.extras), "SYSTEM_NUMPY": str(int(profile.system_numpy)),
              "OS_PACKAGES": " ".join(profile.os_packages),
              "OS_MODULES": " ".join(OS_PACKAGES[p][0] for p in profile.os_packages)}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _files_to_copy(bundle_dir: Path, man, keep) -> List[Tuple[Path, str]]:
    """(source inside bundle_dir, relative name) for every file the staged bundle needs, all checked first."""
    rels = []
    for art in keep:
        rels.append((art.path, f"artifact {art.name} path"))
        if art.check_outputs:
            rels.append((art.check_outputs, f"artifact {art.name} check_outputs"))
    for key in ("inputs", "keras_outputs"):
        if getattr(man.check, key):
            rels.append((getattr(man.check, key), f"check {key}"))
    # every path is checked before the first byte is read or written: a crafted manifest gets nothing copied
    return [(contained_path(bundle_dir, rel, f"{bundle_dir / MANIFEST_NAME}: {what}"), rel) for rel, what in rels]


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
    files = _files_to_copy(bundle_dir, man, keep)
    bdest = dest / "bundle"
    bdest.mkdir(parents=True)
    for src, rel in files:
        if not src.is_file():
            raise IntegrityError(f"{bundle_dir}: {rel} is listed in the manifest but missing; re-run "
                                 "`edgeport convert`.")
        dst = contained_path(bdest, rel, f"staging {rel}")  # the same check on the destination side
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    man.artifacts = keep
    if man.default_artifact not in {a.name for a in keep}:
        man.default_artifact = next((a.name for a in keep if a.quantization == "int8"), keep[0].name)
    write_manifest(bdest, man)
    wdir = dest / "wheels"
    wdir.mkdir()
    runtime_wheel(wdir)
    for whl in wheelhouse(profile).glob("*.whl"):
        shutil.copy2(whl, wdir / whl.name)
    (dest / "device.env").write_text(device_env(profile))
    shutil.copy2(HERE / "install.sh", dest / "install.sh")
    src_profile = PROFILE_DIR / f"{profile.name}.toml"
    if src_profile.is_file():
        shutil.copy2(src_profile, dest / "profile.toml")
    return OfflineBundle(dest, profile.name, [a.name for a in keep], left_out, sorted(p.name for p in wdir.iterdir()))


def _check_out(bdir: Path, out_path: Path, force: bool) -> None:
    """Refuse an --out that is the input bundle, lies inside it, is a directory, or exists without --force."""
    src, dst = bdir.resolve(), out_path.resolve()
    if dst == src or src in dst.parents:
        # --force must never replace the bundle being packed or one of its files
        raise UsageError(f"--out {out_path}: inside the input bundle {bdir}; write the archive somewhere else "
                         f"(default: beside the bundle).")
    if out_path.is_dir():
        raise UsageError(f"--out {out_path}: is a directory; pass a file name ending in .tar.gz.")
    if not dst.parent.is_dir():
        raise UsageError(f"--out {out_path}: directory {out_path.parent} does not exist; create it first.")
    # --force replaces only an archive edgeport wrote (never any other file), and the location must be writable
    check_replaceable_file(out_path, inputs=[bdir], force=force)


def make_offline_bundle(bundle_dir: str, profile: Profile, out: Optional[str] = None, force: bool = False,
                        warn=print) -> OfflineBundle:
    """Write ``out`` (default BUNDLE_DIR-PROFILE.tar.gz): model files, manifest, runtime wheel, wheelhouse.

    Artifacts the profile cannot run are left out with a warning (e.g. dynamic-range models on tflite-runtime,
    ONNX on armv7). The archive is written to a temp name and renamed: never half-written.
    """
    bdir = Path(bundle_dir)
    if not bdir.is_dir():
        raise UsageError(f"{bundle_dir}: not a directory; expected a bundle directory written by `edgeport convert`.")
    name = bdir.resolve().name or "bundle"
    out_path = Path(out) if out else bdir.resolve().parent / f"{name}-{profile.name}.tar.gz"
    _check_out(bdir, out_path, force)
    top = f"edgeport-{name}-{profile.name}"
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
