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

from .errors import EdgeportError, ModelLoadError, UsageError
from .kinds import Format
from .manifest import MANIFEST_NAME, Artifact, Manifest, read_manifest
from .schema import relative_path_error

SUFFIX_FORMAT = {f.suffix: f for f in Format}  # a bare model file's format, by its suffix
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


EXTRACT_RATIO = 20  # a bundle (already-compressed model weights + JSON) inflates ~1.5-4x; 20x leaves room
EXTRACT_FLOOR = 1 << 20  # never refuse an archive that inflates to less than 1 MiB: that cannot hurt
EXTRACT_ABSOLUTE = 2 << 30  # 2 GiB: far above any model a device runs, far below filling a Pi's SD card
MAX_MEMBERS = 256  # a bundle holds ~10 files (offline bundles add a few wheels): hundreds is an attack or a mistake
ENV_MAX_EXTRACT = "EDGEPORT_MAX_EXTRACT_BYTES"
_CHUNK = 1 << 20


@dataclass
class Resolved:
    """What :func:`resolve` found: a bundle (manifest + directory) or a bare model file."""

    directory: Path
    manifest: Optional[Manifest]
    bare_file: Optional[Path] = None
    temp_dir: Optional[str] = None  # extracted archive, removed when the Model is closed or collected


def extract_limit(archive: Path, max_extract_bytes: Optional[int] = None) -> int:
    """Bytes an archive may inflate to: the argument, else $EDGEPORT_MAX_EXTRACT_BYTES, else
    max(20 x archive size, 1 MiB) capped at 2 GiB.

    Raises:
        UsageError: a limit that is not a positive integer.
    """
    if max_extract_bytes is None and os.environ.get(ENV_MAX_EXTRACT):
        raw = os.environ[ENV_MAX_EXTRACT]
        try:
            max_extract_bytes = int(raw)
        except ValueError:
            raise UsageError(f"{ENV_MAX_EXTRACT}={raw!r} is not an integer; expected a byte count, e.g. "
                             "2000000000.") from None
    if max_extract_bytes is not None:
        if isinstance(max_extract_bytes, bool) or int(max_extract_bytes) < 1:
            raise UsageError(f"max_extract_bytes must be a positive byte count, got {max_extract_bytes!r}.")
        return int(max_extract_bytes)
    return min(max(EXTRACT_RATIO * archive.stat().st_size, EXTRACT_FLOOR), EXTRACT_ABSOLUTE)


class _Budget:
    """Counts members and bytes actually written; raises the moment either cap is passed."""

    def __init__(self, archive: Path, limit: int):
        self.archive, self.limit, self.written, self.members = archive, limit, 0, 0

    def member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ModelLoadError(f"{self.archive}: more than {MAX_MEMBERS} members; an edgeport bundle has a few "
                                 "dozen. Refusing to extract it.")

    def copy(self, src, dest: str) -> None:
        # O_EXCL: a member never overwrites an earlier one (or anything a symlink race could point at)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            while True:
                block = src.read(_CHUNK)
                if not block:
                    return
                self.written += len(block)
                if self.written > self.limit:
                    raise ModelLoadError(
                        f"{self.archive}: inflates to more than {self.limit:,} bytes (a decompression bomb, or a "
                        f"very large bundle); refusing it. Raise the limit with load(..., max_extract_bytes=N) "
                        f"or ${ENV_MAX_EXTRACT}=N if you trust this archive.")
                out.write(block)


def _target(archive: Path, root: str, name: str) -> str:
    """Where member ``name`` goes. Extraction never creates links, so the string rules and a normalised
    prefix check suffice (no per-member realpath: it made 1,000-member archives take seconds)."""
    rel = name.rstrip("/")
    why = relative_path_error(rel)
    target = os.path.normpath(os.path.join(root, rel))
    if why or not target.startswith(root + os.sep):
        raise ModelLoadError(f"{archive}: member {name[:100]!r} would extract outside the bundle "
                             f"({why or 'it resolves outside'}); refusing it.")
    return target


def _makedirs(path: str, made: set) -> None:
    if path not in made:
        os.makedirs(path, exist_ok=True)
        made.add(path)


def _extract_tar(archive: Path, root: str, budget: _Budget) -> None:
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.9.17 / 3.11.4; else our own checks only
    made: set = set()
    with tarfile.open(archive, "r:*") as t:
        for m in t:  # streamed: members are read one by one, nothing trusts the headers' sizes
            budget.member()
            if data_filter is not None:
                try:
                    m = data_filter(m, root)  # no absolute paths, no '..', no devices, no links out
                except tarfile.FilterError as e:
                    raise ModelLoadError(f"{archive}: member {m.name[:100]!r} refused ({e}); it would extract "
                                         "outside the bundle or is a device.") from None
            if not (m.isfile() or m.isdir()):  # bundles need no links: refusing them all is simpler and safer
                raise ModelLoadError(f"{archive}: member {m.name[:100]!r} is a link or device; refusing it "
                                     "(it would extract outside the bundle or point elsewhere).")
            dest = _target(archive, root, m.name)
            if m.isdir():
                _makedirs(dest, made)
                continue
            _makedirs(os.path.dirname(dest), made)
            src = t.extractfile(m)
            budget.copy(src, dest)


def _extract_zip(archive: Path, root: str, budget: _Budget) -> None:
    made: set = set()
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()  # the central directory: the member count is known before anything is written
        if len(infos) > MAX_MEMBERS:
            budget.members = len(infos) - 1
            budget.member()
        for info in infos:
            budget.member()
            dest = _target(archive, root, info.filename)
            if info.is_dir():
                _makedirs(dest, made)
                continue
            _makedirs(os.path.dirname(dest), made)
            with z.open(info) as src:  # counts bytes as they inflate: the header's file_size is not trusted
                budget.copy(src, dest)


def _safe_extract(archive: Path, dest: str, max_extract_bytes: Optional[int] = None) -> None:
    """Extract a tar/zip into ``dest``: members must stay inside it, no links or devices, at most
    :data:`MAX_MEMBERS` members and :func:`extract_limit` bytes, counted as they are written.

    Raises:
        ModelLoadError: a member escapes, a cap is exceeded, or the archive is corrupt (one-line message).
    """
    root = os.path.realpath(dest)
    budget = _Budget(archive, extract_limit(archive, max_extract_bytes))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, root, budget)
        else:
            _extract_tar(archive, root, budget)
    except EdgeportError:
        raise
    except Exception as e:  # tarfile/zipfile/gzip/zlib/lzma raise many types, some with multi-line messages
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelLoadError(f"{archive}: cannot read the archive ({type(e).__name__}: {msg}); it is corrupt, "
                             "truncated or not a bundle archive.") from None


def _find_manifest_dir(root: Path) -> Optional[Path]:
    """The directory holding the bundle's manifest: ``root`` itself, else the one manifest at most two
    directory levels down (``edgeport bundle`` archives put it in TOP/bundle/). Symlinked directories are not
    followed.

    Raises:
        ModelLoadError: more than one manifest within two levels (which bundle was meant is ambiguous).
    """
    if (root / MANIFEST_NAME).is_file():
        return root
    found, level = [], [root]
    for _ in range(2):
        nxt = []
        for d in level:
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
        found += [d for d in nxt if (d / MANIFEST_NAME).is_file()]
        level = nxt[:MAX_MEMBERS]
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in found[:5])
        raise ModelLoadError(f"{root}: holds {len(found)} bundles ({names}); pass the one you mean.")
    return found[0] if found else None


def _cleanup(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def resolve(path: os.PathLike, max_extract_bytes: Optional[int] = None) -> Resolved:
    """Classify ``path`` and read its manifest if it has one; archives are extracted to a temp directory.

    Raises:
        ModelLoadError: the path does not exist or is none of the accepted kinds, or the archive is unsafe.
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
            _safe_extract(p, tmp, max_extract_bytes)
            d = _find_manifest_dir(Path(tmp))
            if d is None:
                raise ModelLoadError(f"{p}: the archive holds no {MANIFEST_NAME} (looked two directory levels "
                                     "deep); not an edgeport bundle.")
            return Resolved(d, read_manifest(d), temp_dir=tmp)
        except BaseException:
            _cleanup(tmp)
            raise
    raise ModelLoadError(f"{p}: unsupported file type; expected a bundle directory or archive, or a file ending "
                         f"in {', '.join(SUFFIX_FORMAT)}.")


def pick_artifact(manifest: Manifest, name: Optional[str], runnable) -> Artifact:
    """The artifact called ``name``, else the bundle's default, else the first one ``runnable(artifact)`` accepts
    (an installed backend runs its format and quantization)."""
    if name:
        return manifest.artifact(name)
    default = manifest.default_artifact
    if default:
        try:
            art = manifest.artifact(default)
            if runnable(art):
                return art
        except EdgeportError:  # a stale default falls through to the first runnable artifact
            pass
    for art in manifest.artifacts:
        if runnable(art):
            return art
    return manifest.artifacts[0]  # nothing runnable: loading it raises the install hint
