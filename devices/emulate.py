"""Emulated ARM devices on an x86_64 host: qemu-user through binfmt_misc, Debian root filesystems, chroot.

Used by `make test-arm` (tests/test_arm.py). Needs root. Every step that cannot be done raises EmulationError
saying which and why; nothing is skipped silently. Two facts measured on this setup shape it:
pin the emulated CPU (qemu's default `max` CPU exposes SME and LiteRT's int8 kernels then return wrong numbers),
and give onnxruntime an ARM /proc/cpuinfo (it segfaults reading the host's x86 one under qemu).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from edgeport_runtime.errors import EdgeportError


# Debian architecture -> (binfmt handler, packages the root filesystem needs besides minbase)
ARCHES: Dict[str, Dict[str, object]] = {
    "arm64": {"binfmt": "qemu-aarch64", "machine": "aarch64",
              "include": ["python3", "python3-venv", "python3-pip", "ca-certificates"]},
    # 32-bit Pi OS path: numpy and Pillow from the OS (no armv7 wheels of either on PyPI), the interpreter from
    # the wheelhouse (tflite-runtime on bookworm; on trixie the numpy backend's pure-Python wheels)
    "armhf": {"binfmt": "qemu-arm", "machine": "armv7l",
              "include": ["python3", "python3-venv", "python3-pip", "python3-numpy", "python3-pil",
                          "ca-certificates"]},
}
HOST_PACKAGES = ["qemu-user-static", "binfmt-support", "mmdebstrap", "arch-test"]
# Debian releases a root filesystem can be built from: bookworm (Python 3.11, numpy 1.24 / Pillow 9.4 from the OS)
# and trixie (Python 3.13, numpy 2.2 / Pillow 11.1), the bases of Raspberry Pi OS bookworm and trixie.
SUITES = ("bookworm", "trixie")
SUITE = "bookworm"  # the default

# What a Cortex-A72 reports (trimmed): onnxruntime parses it; the host's x86 file makes it crash under qemu.
ARM_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n" for i in range(4))


class EmulationError(EdgeportError):
    """Emulated ARM could not be set up (names the missing tool or failing step)."""


def _run(cmd: List[str], what: str, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise EmulationError(f"{what} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[-500:]}")
    return out


def ensure_host_tools() -> None:
    """Install qemu-user-static, binfmt-support, mmdebstrap and arch-test with apt when missing."""
    if os.geteuid() != 0:
        raise EmulationError("emulated ARM needs root (binfmt_misc, mounts, chroot); run `make test-arm` as root.")
    missing = [p for p in HOST_PACKAGES
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
        # other apt runs (a parallel CI job) hold the dpkg lock for a while: wait for it instead of failing
        _run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "--no-install-recommends",
              *missing], "apt-get install", env=env)


def ensure_binfmt(arch: str) -> None:
    """Mount binfmt_misc if needed and enable the qemu handler for ``arch`` (with the F flag: no copy in chroot)."""
    handler = ARCHES[arch]["binfmt"]
    root = Path("/proc/sys/fs/binfmt_misc")
    if not (root / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], "mounting binfmt_misc")
    _run(["update-binfmts", "--enable", str(handler)], f"update-binfmts --enable {handler}")
    status = (root / str(handler)).read_text() if (root / str(handler)).exists() else ""
    if "enabled" not in status or "F" not in (re.search(r"flags: (\w*)", status) or [None, ""])[1]:
        raise EmulationError(f"binfmt handler {handler} is not enabled with the F flag: {status!r}")


def host_mirror() -> str:
    """The Debian mirror the host's apt uses (read at run time, never written into a file)."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or \
            re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s+", text, re.M)
        if m:
            return m.group(1)
    raise EmulationError("no Debian mirror found in /etc/apt/sources.list(.d); cannot build a root filesystem.")


def rootfs_cache() -> Path:
    """$EDGEPORT_ROOTFS_CACHE, else ~/.cache/edgeport/rootfs: kept across runs (a root filesystem takes minutes)."""
    env = os.environ.get("EDGEPORT_ROOTFS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgeport" / "rootfs"


def _check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise EmulationError(f"no root filesystem for Debian {suite!r}; known releases: {', '.join(SUITES)}.")


def rootfs_tarball(arch: str, suite: str = SUITE) -> Path:
    """A cached Debian ``suite`` root filesystem tarball for ``arch`` (built once with mmdebstrap, ~2-3 min)."""
    _check_suite(suite)
    spec = ARCHES[arch]
    key = hashlib.sha256(",".join(sorted(spec["include"])).encode()).hexdigest()[:8]  # other packages, other file
    dest = rootfs_cache() / f"{suite}-{arch}-{key}.tar"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(f".{dest.stem}.lock"), "w") as lock:
        # another run building the same root filesystem (a parallel CI job): wait for it and take its result
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.is_file():
            return dest
        for stale in dest.parent.glob(f".{dest.stem}.partial-*.tar"):  # left by a killed run (we hold the lock)
            stale.unlink()
        tmp = dest.with_name(f".{dest.stem}.partial-{os.getpid()}.tar")
        try:
            _run(["mmdebstrap", "--mode=root", f"--arch={arch}", "--variant=minbase",
                  "--include=" + ",".join(spec["include"]), suite, str(tmp), host_mirror()],
                 f"mmdebstrap {suite} {arch}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(dest)  # whole or not at all: a killed run leaves only a partial file (removed by the next)
    return dest


@contextlib.contextmanager
def chroot(arch: str, suite: str = SUITE) -> Iterator[Path]:
    """A fresh Debian ``suite`` root filesystem for ``arch`` with /proc, /sys, /dev mounted and an ARM
    /proc/cpuinfo; cleaned up on exit."""
    _check_suite(suite)
    ensure_binfmt(arch)
    tarball = rootfs_tarball(arch, suite)
    root = Path(tempfile.mkdtemp(prefix=f"edgeport-{suite}-{arch}-"))
    mounted: List[Path] = []
    try:
        _run(["tar", "-xf", str(tarball), "-C", str(root)], "extracting the root filesystem")
        for args, target in ((["-t", "proc", "proc"], "proc"), (["--rbind", "/sys"], "sys"),
                             (["--rbind", "/dev"], "dev")):
            (root / target).mkdir(exist_ok=True)
            _run(["mount", *args, str(root / target)], f"mounting {target}")
            mounted.append(root / target)
        cpuinfo = root / "tmp" / "cpuinfo"
        cpuinfo.write_text(ARM_CPUINFO)
        _run(["mount", "--bind", str(cpuinfo), str(root / "proc" / "cpuinfo")], "mounting an ARM /proc/cpuinfo")
        mounted.append(root / "proc" / "cpuinfo")
        shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
        yield root
    finally:
        for m in reversed(mounted):
            if subprocess.run(["umount", "-R", str(m)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(m)], capture_output=True)
        still = [m for m in mounted if os.path.ismount(m)]
        if not still:
            shutil.rmtree(root, ignore_errors=True)


def run(root: Path, command: str, qemu_cpu: Optional[str] = None, timeout: int = 1800) -> str:
    """Run a shell command inside the chroot, emulating ``qemu_cpu``; return its stdout."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    if qemu_cpu:
        env["QEMU_CPU"] = qemu_cpu
    chroot_bin = shutil.which("chroot") or "/usr/sbin/chroot"  # looked up on the host's PATH, not the chroot's
    out = subprocess.run([chroot_bin, str(root), "/bin/sh", "-c", command], capture_output=True, text=True,
                         env=env, timeout=timeout)
    if out.returncode != 0:
        raise EmulationError(f"in the {root.name} chroot ({qemu_cpu or 'default cpu'}): `{command}` exited "
                             f"{out.returncode}: {(out.stderr or out.stdout).strip()[-800:]}")
    return out.stdout
