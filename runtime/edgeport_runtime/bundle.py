"""Finding the model file behind what the user passed: a bundle directory, a bundle archive or a bare file."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ModelLoadError
from .manifest import MANIFEST_NAME, Artifact, Manifest, read_manifest

SUFFIX_FORMAT = {".tflite": "tflite", ".onnx": "onnx"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclass
class Resolved:
    """What :func:`resolve` found: a bundle (manifest + directory) or a bare model file."""

    directory: Path
    manifest: Optional[Manifest]
    bare_file: Optional[Path] = None
    temp_dir: Optional[str] = None  # extracted archive, removed when the Model is closed


def _safe_extract(archive: Path, dest: str) -> None:
    """Extract a tar/zip, refusing members that would land outside ``dest`` (path traversal, links)."""
    root = os.path.realpath(dest)

    def check(name: str) -> None:
        target = os.path.realpath(os.path.join(root, name))
        if not (target == root or target.startswith(root + os.sep)):
            raise ModelLoadError(f"{archive}: member {name!r} would extract outside the bundle; refusing it.")

    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for n in z.namelist():
                    check(n)
                z.extractall(root)
        else:
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    check(m.name)
                    if not (m.isfile() or m.isdir()):
                        raise ModelLoadError(f"{archive}: member {m.name!r} is a link or device; refusing it.")
                t.extractall(root)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise ModelLoadError(f"{archive}: cannot read the archive ({e}); it is corrupt or truncated.") from None


def _find_manifest_dir(root: Path) -> Optional[Path]:
    if (root / MANIFEST_NAME).is_file():
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST_NAME).is_file():
        return subdirs[0]
    return None


def resolve(path: os.PathLike) -> Resolved:
    """Classify ``path`` and read its manifest if it has one.

    Raises:
        ModelLoadError: the path does not exist or is none of the accepted kinds.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or directory; expected a bundle directory, a bundle archive "
                             f"({', '.join(ARCHIVE_SUFFIXES)}) or a .tflite / .onnx file.")
    if p.is_dir():
        d = _find_manifest_dir(p)
        if d is None:
            raise ModelLoadError(f"{p}: no {MANIFEST_NAME} here; expected a bundle written by `edgeport convert`.")
        return Resolved(d, read_manifest(d))
    if p.suffix.lower() in SUFFIX_FORMAT:
        return Resolved(p.parent, None, bare_file=p)
    if any(p.name.lower().endswith(s) for s in ARCHIVE_SUFFIXES):
        tmp = tempfile.mkdtemp(prefix="edgeport-bundle-")
        try:
            _safe_extract(p, tmp)
            d = _find_manifest_dir(Path(tmp))
            if d is None:
                raise ModelLoadError(f"{p}: the archive holds no {MANIFEST_NAME}; not an edgeport bundle.")
            return Resolved(d, read_manifest(d), temp_dir=tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    raise ModelLoadError(f"{p}: unsupported file type; expected a bundle directory or archive, or a file ending "
                         f"in {', '.join(SUFFIX_FORMAT)}.")


def pick_artifact(manifest: Manifest, name: Optional[str], runnable) -> Artifact:
    """The artifact called ``name``, else the bundle's default, else the first one ``runnable(format)`` accepts."""
    if name:
        return manifest.artifact(name)
    default = manifest.default_artifact
    if default:
        try:
            art = manifest.artifact(default)
            if runnable(art.format):
                return art
        except Exception:  # a stale default falls through to the first runnable artifact
            pass
    for art in manifest.artifacts:
        if runnable(art.format):
            return art
    return manifest.artifacts[0]  # nothing runnable: loading it raises the install hint
