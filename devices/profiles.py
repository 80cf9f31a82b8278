"""Device profiles: one TOML file per target in devices/profiles/, loaded into :class:`Profile`.

A profile says what the device is (architecture, pip platform tags, Python, cores, RAM, CPU model for
emulation) and which wheels it gets (pinned). What a profile can run follows from its wheels, in one table.

Profiles are validated against a typed schema when loaded (types, ranges, allowed values, patterns): their
values end up in pip command lines, in the device's install script and in remote shell commands, so a profile
that does not fit the schema is refused with a one-line error before anything runs.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgeport_runtime.errors import UsageError, close_match_hint, unknown_name

PROFILE_DIR = Path(__file__).parent / "profiles"

# wheel -> (runtime backend, artifact format it runs, pip extra of edgeport-runtime)
BACKEND_WHEELS: Dict[str, Tuple[str, str, str]] = {
    "ai-edge-litert": ("litert", "tflite", "litert"),
    "tflite-runtime": ("tflite-runtime", "tflite", "tflite"),
    "onnxruntime": ("onnxruntime", "onnx", "onnx"),
}
# wheel -> pip extra of edgeport-runtime it provides besides a backend (Pillow: image inputs for predict)
EXTRA_WHEELS: Dict[str, str] = {"pillow": "image"}
# Debian packages a profile may take from the OS instead of PyPI (no wheels for the platform) -> the Python
# module install.sh checks for; the device venv then sees them through --system-site-packages.
OS_PACKAGES: Dict[str, Tuple[str, str]] = {
    "python3-numpy": ("numpy", ""),
    "python3-pil": ("PIL", "image"),
}
ARCHES = ("aarch64", "armv7l", "x86_64")
BACKENDS = tuple(b for b, _, _ in BACKEND_WHEELS.values())

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
PYTHON_RE = re.compile(r"^3\.[0-9]{1,2}$")
# what pip accepts for --platform on Linux: manylinux1/2010/2014, manylinux_X_Y, musllinux_X_Y, linux
PLATFORM_RE = re.compile(r"^(manylinux(1|2010|2014|_[0-9]+_[0-9]+)|musllinux_[0-9]+_[0-9]+|linux)_"
                         r"(aarch64|armv7l|x86_64)$")
WHEEL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$")
WHEEL_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")  # an exact release, no specifiers or local parts
QEMU_CPU_RE = re.compile(r"^([a-z0-9][a-z0-9.-]{0,40})?$")
TEXT_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")  # one printable line


@dataclass(frozen=True)
class Profile:
    """One deployment target."""

    name: str
    description: str
    arch: str
    os: str
    python: str
    pip_platforms: List[str]
    cores: int
    ram_mb: int
    cpu: str
    qemu_cpu: str
    backend: str
    system_numpy: bool
    wheels: Dict[str, str] = field(default_factory=dict)
    os_packages: List[str] = field(default_factory=list)

    @property
    def backends(self) -> List[str]:
        """Runtime backends this profile's wheels provide."""
        return [BACKEND_WHEELS[w][0] for w in self.wheels if w in BACKEND_WHEELS]

    @property
    def formats(self) -> List[str]:
        """Artifact formats the profile can run."""
        return sorted({BACKEND_WHEELS[w][1] for w in self.wheels if w in BACKEND_WHEELS})

    @property
    def extras(self) -> List[str]:
        """The pip extras of edgeport-runtime the device installs (backends, image support, the service)."""
        ex = [BACKEND_WHEELS[w][2] for w in self.wheels if w in BACKEND_WHEELS]
        ex += [EXTRA_WHEELS[w] for w in self.wheels if w in EXTRA_WHEELS]
        ex += [OS_PACKAGES[p][1] for p in self.os_packages if OS_PACKAGES[p][1]]
        ex.append("serve")  # every device can run the model as a service (pure-Python wheels, any platform)
        return list(dict.fromkeys(ex))

    def can_run(self, fmt: str, quantization: str) -> Tuple[bool, str]:
        """Whether an artifact of ``fmt``/``quantization`` runs here, and why not when it does not."""
        if fmt not in self.formats:
            return False, (f"{self.name} has no {fmt} interpreter ({self.arch}: "
                           + ("no onnxruntime wheels for armv7)" if self.arch == "armv7l" else "not in its wheels)"))
        if fmt == "tflite" and self.backends == ["tflite-runtime"] and quantization == "dynamic-int8":
            return False, ("tflite-runtime 2.14 cannot load dynamic-range models made by TF 2.21 "
                           "(FULLY_CONNECTED op version 12)")
        return True, ""


def _text(rx: re.Pattern, what: str) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        if not isinstance(v, str):
            return f"a string ({what})"
        return None if rx.match(v) else what
    return check


def _int(lo: int, hi: int) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        # bool is an int subclass in Python; `cores = true` is a mistake, not 1
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return None if ok else f"an integer from {lo} to {hi}"
    return check


def _one_of(choices) -> Callable[[Any], Optional[str]]:
    return lambda v: None if isinstance(v, str) and v in choices else "one of " + ", ".join(choices)


def _bool(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else "true or false"


def _platforms(v: Any) -> Optional[str]:
    if not isinstance(v, list) or not v or not all(isinstance(t, str) and PLATFORM_RE.match(t) for t in v):
        return ("a non-empty list of pip platform tags like \"manylinux_2_28_aarch64\" "
                "(manylinux1/2010/2014/_X_Y, musllinux_X_Y or linux, then _aarch64, _armv7l or _x86_64)")
    return None


def _wheels(v: Any) -> Optional[str]:
    if not isinstance(v, dict) or not v:
        return "a table of wheel = \"exact version\" (e.g. numpy = \"2.4.6\")"
    for k, ver in v.items():
        if not WHEEL_NAME_RE.match(k):
            return f"wheel names in lower case letters, digits, '.', '_', '-' (not {k!r})"
        if not isinstance(ver, str) or not WHEEL_VERSION_RE.match(ver):
            return f"an exact version like \"2.4.6\" for {k} (not {ver!r}; no ==, >=, ranges or local parts)"
    return None


def _os_packages(v: Any) -> Optional[str]:
    if not isinstance(v, list) or not all(isinstance(p, str) and p in OS_PACKAGES for p in v):
        return "a list of OS packages from: " + ", ".join(OS_PACKAGES)
    return None


SCHEMA: Dict[str, Callable[[Any], Optional[str]]] = {
    "name": _text(NAME_RE, "lower case letters, digits, '.', '_', '-', at most 64, like \"rpi4\""),
    "description": _text(TEXT_RE, "one line of printable text, at most 200 characters"),
    "arch": _one_of(ARCHES),
    "os": _text(TEXT_RE, "one line of printable text, at most 200 characters"),
    "python": _text(PYTHON_RE, "MAJOR.MINOR like \"3.11\""),
    "pip_platforms": _platforms,
    "cores": _int(1, 1024),
    "ram_mb": _int(64, 16 * 1024 * 1024),
    "cpu": _text(TEXT_RE, "one line of printable text, at most 200 characters"),
    "qemu_cpu": _text(QEMU_CPU_RE, "a qemu CPU model like \"cortex-a72\", or \"\" for none"),
    "backend": _one_of(BACKENDS),
    "system_numpy": _bool,
    "wheels": _wheels,
    "os_packages": _os_packages,
}
OPTIONAL = {"os_packages"}


def validate_profile(data: Dict[str, Any], where: str) -> Profile:
    """Check ``data`` (a parsed profile) against the schema and return the Profile.

    Raises:
        UsageError: an unknown key (with the closest known one), a missing key, a value of the wrong type, out
            of range or not matching its pattern, pip tags of another architecture, a backend without its wheel.
    """
    for k in data:
        if k not in SCHEMA:
            raise UsageError(f"{where}: unknown key {k!r}.{close_match_hint(k, SCHEMA)}")
    missing = sorted(set(SCHEMA) - set(data) - OPTIONAL)
    if missing:
        raise UsageError(f"{where}: missing keys {missing}; every profile needs {', '.join(SCHEMA)}.")
    for k, check in SCHEMA.items():
        if k in data:
            problem = check(data[k])
            if problem:
                raise UsageError(f"{where}: {k} = {data[k]!r} is not valid; expected {problem}.")
    p = Profile(**data)
    wrong = [t for t in p.pip_platforms if not t.endswith("_" + p.arch)]
    if wrong:
        raise UsageError(f"{where}: pip_platforms {wrong} are not for arch {p.arch!r}; every tag must end in "
                         f"_{p.arch}.")
    if p.backend not in p.backends:
        raise UsageError(f"{where}: backend {p.backend!r} needs its wheel in [wheels] (one of "
                         f"{', '.join(w for w, b in BACKEND_WHEELS.items() if b[0] == p.backend)}).")
    if p.system_numpy != ("python3-numpy" in p.os_packages) and "os_packages" in data:
        raise UsageError(f"{where}: system_numpy = {str(p.system_numpy).lower()} but os_packages "
                         f"{'lacks' if p.system_numpy else 'has'} python3-numpy; make them agree.")
    return p


def _parse(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: cannot read the profile ({e}).") from None
    return validate_profile(data, str(path))


def load_profiles(directory: Optional[Path] = None) -> Dict[str, Profile]:
    """Every profile in ``directory`` (default: the built-in ones), by name."""
    d = directory or PROFILE_DIR
    profiles = {}
    for f in sorted(d.glob("*.toml")):
        p = _parse(f)
        if p.name != f.stem:
            raise UsageError(f"{f}: profile name {p.name!r} must match the file name {f.stem!r}.")
        profiles[p.name] = p
    return profiles


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (a built-in name or a path to a .toml file)."""
    if name.endswith(".toml") and Path(name).is_file():
        return _parse(Path(name))
    profiles = load_profiles()
    if name not in profiles:
        raise unknown_name("device profile", name, profiles, "Or pass a path to a profile .toml file.")
    return profiles[name]
