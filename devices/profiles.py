"""Device profiles: one TOML file per target in devices/profiles/, loaded into :class:`Profile`.

A profile says what the device is (architecture, pip platform tags, Python, cores, RAM, CPU model for
emulation) and which wheels it gets (pinned). What a profile can run follows from its wheels, in one table.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgeport_runtime.errors import UsageError, close_match_hint, unknown_name

PROFILE_DIR = Path(__file__).parent / "profiles"

# wheel -> (runtime backend, artifact format it runs, pip extra of edgeport-runtime)
BACKEND_WHEELS: Dict[str, Tuple[str, str, str]] = {
    "ai-edge-litert": ("litert", "tflite", "litert"),
    "tflite-runtime": ("tflite-runtime", "tflite", "tflite"),
    "onnxruntime": ("onnxruntime", "onnx", "onnx"),
}


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

    @property
    def backends(self) -> List[str]:
        """Runtime backends this profile's wheels provide."""
        return [BACKEND_WHEELS[w][0] for w in self.wheels if w in BACKEND_WHEELS]

    @property
    def formats(self) -> List[str]:
        """Artifact formats the profile can run."""
        return sorted({BACKEND_WHEELS[w][1] for w in self.wheels if w in BACKEND_WHEELS})

    def can_run(self, fmt: str, quantization: str) -> Tuple[bool, str]:
        """Whether an artifact of ``fmt``/``quantization`` runs here, and why not when it does not."""
        if fmt not in self.formats:
            return False, (f"{self.name} has no {fmt} interpreter ({self.arch}: "
                           + ("no onnxruntime wheels for armv7)" if self.arch == "armv7l" else "not in its wheels)"))
        if fmt == "tflite" and self.backends == ["tflite-runtime"] and quantization == "dynamic-int8":
            return False, ("tflite-runtime 2.14 cannot load dynamic-range models made by TF 2.21 "
                           "(FULLY_CONNECTED op version 12)")
        return True, ""


def _parse(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path}: cannot read the profile ({e}).") from None
    known = {f.name for f in fields(Profile)}
    for k in data:
        if k not in known:
            raise UsageError(f"{path}: unknown key {k!r}.{close_match_hint(k, known)}")
    missing = known - set(data) - {"wheels"}
    if missing:
        raise UsageError(f"{path}: missing keys {sorted(missing)}.")
    return Profile(**data)


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
