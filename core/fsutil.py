"""Output directories that appear whole or not at all, and that ``--force`` may only replace when edgeport made them.

Every directory edgeport writes carries a marker file (:data:`MARKER`, JSON: which command made it, edgeport
version, time, creating pid). ``--force`` replaces only a directory with that marker, never the working
directory, ``/``, the home directory or an ancestor of either, and never a directory that holds, is inside or is
one of the command's inputs (compared as resolved real paths). Half-written ``.NAME.*.partial`` directories
carry the marker too, so a later run can remove the ones whose creator died (SIGKILL, power loss).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional

from edgeport_runtime.errors import UsageError

from edgeport import __version__

MARKER = ".edgeport"


def _real(p: os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(p))))


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), to tell a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return start is None or _start_time(pid) in (None, start)


def write_marker(directory: os.PathLike, command: str) -> None:
    """Write the marker that lets a later ``--force`` recognise ``directory`` as edgeport's own output."""
    pid = os.getpid()
    info = {"made_by": "edgeport", "command": command, "version": __version__, "pid": pid,
            "pid_start": _start_time(pid),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (Path(directory) / MARKER).write_text(json.dumps(info) + "\n")


def read_marker(directory: os.PathLike) -> Optional[dict]:
    """The marker of ``directory`` as a dict, or None when it has none (or an unreadable one)."""
    try:
        info = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("made_by") == "edgeport" else None


def _never_replaceable(real: Path) -> Optional[str]:
    """Why ``real`` must never be deleted wholesale, or None."""
    cwd, home = _real(os.getcwd()), _real(Path.home())
    if real == Path(real.anchor):
        return "is the file-system root"
    if real == cwd or real in cwd.parents:
        return "is (or contains) the current directory"
    if real == home or real in home.parents:
        return "is (or contains) your home directory"
    return None


def _input_clash(real: Path, inputs: Iterable[os.PathLike]) -> Optional[str]:
    """Describe how ``real`` overlaps an input of the command (same path, holds it, or lies inside it)."""
    for inp in inputs:
        if inp is None:
            continue
        ri = _real(inp)
        if ri == real:
            return f"is the input {inp}"
        if real in ri.parents:
            return f"holds the input {inp}"
        if ri in real.parents:
            return f"is inside the input {inp}"
    return None


def _probe_writable(out: Path, what: str) -> None:
    """Create the parent of ``out`` if needed and create/remove a probe directory in it.

    ``os.access`` says yes to root even on read-only mounts and /proc, so only a real write tells.
    """
    parent = _real(out).parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{what} {out}: cannot create parent directory {parent} (a file is in the way).")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise UsageError(f"{what} {out}: cannot create parent directory {parent} ({e.strerror}); "
                             "choose a writable location.") from None
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".probe", dir=str(parent))
        os.rmdir(probe)
    except OSError as e:
        raise UsageError(f"{what} {out}: directory {parent} is not writable (creating a test entry there "
                         f"failed: {e.strerror}); choose a writable location.") from None


def check_out_dir(out: os.PathLike, force: bool, inputs: Iterable[os.PathLike] = (), what: str = "--out") -> Path:
    """Check ``out`` can be created (or, with ``force``, safely replaced) before any slow work starts.

    Args:
        out: the output directory.
        force: the user asked to replace an existing ``out``.
        inputs: paths the command reads (model file, data, run directory); ``out`` may not overlap them.
        what: how the option is named in messages.

    Raises:
        UsageError: ``out`` exists (without ``force``), is not edgeport's, overlaps an input, is a protected
            directory, or its parent cannot be created or written.
    """
    out = Path(out)
    real = _real(out)
    inputs = list(inputs)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UsageError(f"{what} {out}: exists and is not a directory; choose another path.")
        if not force:
            raise UsageError(f"{what} {out}: already exists; pass --force to replace it, or choose another "
                             "directory.")
        why = _never_replaceable(real) or _input_clash(real, inputs)
        if why:
            raise UsageError(f"{what} {out}: refusing to replace it, it {why}; choose a new directory.")
        if read_marker(real) is None:
            raise UsageError(f"{what} {out}: refusing to replace it with --force, it was not made by edgeport "
                             f"(no {MARKER} marker inside); remove it yourself or choose a new directory.")
    else:
        why = _never_replaceable(real) or _input_clash(real, inputs)
        if why:
            raise UsageError(f"{what} {out}: it {why}; choose a new directory.")
    _probe_writable(out, what)
    return out


def check_replaceable_file(path: os.PathLike, inputs: Iterable[os.PathLike] = (), force: bool = False,
                           what: str = "--out") -> Path:
    """The file version of :func:`check_out_dir`, for archive outputs such as `edgeport bundle --out`.

    An existing ``path`` is replaced only with ``force`` and only when it is an edgeport archive (a tar whose
    members all sit under one top-level ``edgeport-*`` directory); never an input of the command, a directory,
    or a file inside an input directory. The parent directory is created and probed for writing.

    Raises:
        UsageError: any of the above, with what to do.
    """
    path = Path(path)
    real = _real(path)
    why = _input_clash(real, [i for i in inputs if i is not None])
    if why:
        raise UsageError(f"{what} {path}: it {why}; choose another file name.")
    if path.exists():
        if not path.is_file():
            raise UsageError(f"{what} {path}: exists and is not a file; choose another path.")
        if not force:
            raise UsageError(f"{what} {path}: already exists; pass --force to replace it.")
        if not _is_edgeport_archive(real):
            raise UsageError(f"{what} {path}: refusing to replace it with --force, it is not an edgeport archive; "
                             "remove it yourself or choose another file name.")
    _probe_writable(path, what)
    return path


def _is_edgeport_archive(path: Path) -> bool:
    try:
        with tarfile.open(path) as t:
            tops = {m.name.split("/", 1)[0] for m in t.getmembers()}
    except (tarfile.TarError, OSError, EOFError):
        return False
    return len(tops) == 1 and next(iter(tops)).startswith("edgeport-")


def remove_stale_partials(out: os.PathLike) -> list:
    """Remove ``.OUT.*.partial`` / ``.OUT.old-*`` leftovers of ``out`` whose creating process is dead.

    Only directories carrying edgeport's marker are touched; a live writer's directory is left alone.
    Returns the removed paths.
    """
    out = Path(out)
    parent = _real(out).parent
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(f".{out.name}.")
                      and (p.name.endswith(".partial") or ".old-" in p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for p in candidates:
        if ".old-" in p.name:  # a replaced output awaiting deletion: named after the replacing process
            try:
                pid, start = int(p.name.rsplit(".old-", 1)[1]), None
            except ValueError:
                continue
            if read_marker(p) is None:
                continue
        else:
            info = read_marker(p)
            if info is None or not isinstance(info.get("pid"), int):
                continue
            pid, start = info["pid"], info.get("pid_start")
        if pid != os.getpid() and not _pid_alive(pid, start):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def staged_dir(out: os.PathLike, force: bool = False, command: str = "edgeport",
               inputs: Iterable[os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temp directory beside ``out``; on success it replaces ``out`` in one rename, on error it vanishes.

    A crash, Ctrl-C or exception therefore never leaves a half-written ``out``; with ``force`` an existing
    ``out`` is replaced only after the new one is complete (and only if :func:`check_out_dir` allows it). The
    new directory carries the edgeport marker naming ``command``.
    """
    inputs = list(inputs)
    out = check_out_dir(out, force, inputs)
    remove_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=str(_real(out).parent)))
    try:
        write_marker(tmp, command)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; the result should look like any mkdir
        yield tmp
        check_out_dir(out, force, inputs)  # the world may have changed during a long run
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = _real(out).parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dead_temp_dirs(prefix: str) -> list:
    """Remove marked ``$TMPDIR/PREFIX*`` work directories whose creating process is dead; return them."""
    removed = []
    for p in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        info = read_marker(p) if p.is_dir() and not p.is_symlink() else None
        if info and isinstance(info.get("pid"), int) and info["pid"] != os.getpid() \
                and not _pid_alive(info["pid"], info.get("pid_start")):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
