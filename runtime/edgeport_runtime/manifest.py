"""The bundle manifest: the one schema shared by the toolkit (which writes it) and the runtime (which reads it).

A bundle is a directory (or a .tar.gz / .zip of one) holding model files and ``manifest.json``. The manifest is
plain JSON so a device needs only the standard library to read it. This module owns the schema: the toolkit
builds :class:`Manifest` objects and calls :func:`write_manifest`; the runtime calls :func:`read_manifest`.

Schema (version 1)::

    schema_version: 1
    created: ISO-8601 UTC time
    task: "classification" | "autoencoder"
    source: {path, sha256, format}
    labels: [str, ...]                   class names, index = output position
    preprocessing: {input_shape, input_scale, input_offset, layout, color}
                   model input = raw * input_scale + input_offset  (raw: pixel values, CSV features)
                   tabular data may add feature_mean/feature_std lists (standardized: true): then
                   model input = (raw * input_scale + input_offset - feature_mean) / feature_std
    calibration: {source, count, seed, stratified}
    toolchain: {package: version}
    default_artifact: the artifact a device loads when none is named
    skipped: {recipe: reason} recipes of an implicit "all" that do not apply to this model
    check: {inputs: "check_inputs.npy"}  a few held-out inputs; artifact["check_outputs"] holds the
                                          outputs the toolkit saw, for smoke checks on a device
    artifacts: [{name, path, format, recipe, quantization, bytes, gzip_bytes, sha256, sparsity,
                 inputs: [TensorSpec], outputs: [TensorSpec], check_outputs, parity}]
    TensorSpec: {name, shape (None = any batch), dtype, scale, zero_point}  scale/zero_point null when float
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import IntegrityError, ModelLoadError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FORMATS = ("tflite", "onnx")


@dataclass
class TensorSpec:
    """One model input or output as the artifact sees it (int8 artifacts carry scale and zero point)."""

    name: str
    shape: List[Optional[int]]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    @property
    def quantized(self) -> bool:
        """True when the tensor holds integers that stand for real values (scale and zero point set)."""
        return self.scale is not None and self.dtype in ("int8", "uint8", "int16")


@dataclass
class Artifact:
    """One model file in a bundle and everything needed to run and trust it."""

    name: str
    path: str
    format: str
    recipe: str
    sha256: str
    bytes: int
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    quantization: str = "float32"
    gzip_bytes: Optional[int] = None
    sparsity: Optional[float] = None
    check_outputs: Optional[str] = None
    parity: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """The whole manifest.json of a bundle."""

    artifacts: List[Artifact]
    task: str = "classification"
    labels: List[str] = field(default_factory=list)
    preprocessing: Dict[str, Any] = field(default_factory=dict)
    source: Dict[str, Any] = field(default_factory=dict)
    calibration: Dict[str, Any] = field(default_factory=dict)
    toolchain: Dict[str, str] = field(default_factory=dict)
    check: Dict[str, Any] = field(default_factory=dict)
    default_artifact: str = ""
    skipped: Dict[str, str] = field(default_factory=dict)  # recipe -> why it does not apply to this model
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def artifact(self, name: str) -> Artifact:
        """Return the artifact called ``name`` or raise with the names that exist."""
        for art in self.artifacts:
            if art.name == name:
                return art
        from .errors import unknown_name

        raise unknown_name("artifact", name, [a.name for a in self.artifacts])

    def to_dict(self) -> Dict[str, Any]:
        """The JSON-ready dict, schema_version first."""
        d = asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}


def sha256_file(path: os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _spec(d: Dict[str, Any], where: str) -> TensorSpec:
    try:
        return TensorSpec(
            name=str(d["name"]), shape=list(d["shape"]), dtype=str(d["dtype"]),
            scale=d.get("scale"), zero_point=d.get("zero_point"),
        )
    except (KeyError, TypeError) as e:
        raise ModelLoadError(f"manifest: {where} is missing field {e}; expected name, shape, dtype.") from None


def manifest_from_dict(d: Dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
    """Parse a manifest dict, checking the schema version and required fields.

    Raises:
        IntegrityError: unknown schema version.
        ModelLoadError: a required field is missing or has the wrong type.
    """
    if not isinstance(d, dict):
        raise ModelLoadError(f"{where}: expected a JSON object, got {type(d).__name__}.")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise IntegrityError(
            f"{where}: unknown manifest schema_version {version!r}; this edgeport-runtime reads version "
            f"{SCHEMA_VERSION}. Upgrade edgeport-runtime (or re-run `edgeport convert`) so both sides agree."
        )
    arts = []
    for i, a in enumerate(d.get("artifacts") or []):
        try:
            if a["format"] not in FORMATS:
                raise ModelLoadError(f"{where}: artifact {a.get('name')!r} has unknown format {a['format']!r}; "
                                     f"expected one of {', '.join(FORMATS)}.")
            arts.append(Artifact(
                name=a["name"], path=a["path"], format=a["format"], recipe=a.get("recipe", ""),
                sha256=a["sha256"], bytes=int(a["bytes"]),
                inputs=[_spec(s, f"artifact {a['name']} input") for s in a["inputs"]],
                outputs=[_spec(s, f"artifact {a['name']} output") for s in a["outputs"]],
                quantization=a.get("quantization", "float32"), gzip_bytes=a.get("gzip_bytes"),
                sparsity=a.get("sparsity"), check_outputs=a.get("check_outputs"), parity=a.get("parity"),
                extra=a.get("extra") or {},
            ))
        except KeyError as e:
            raise ModelLoadError(f"{where}: artifact #{i} is missing field {e}.") from None
    if not arts:
        raise ModelLoadError(f"{where}: the bundle lists no artifacts; re-run `edgeport convert`.")
    return Manifest(
        artifacts=arts, task=d.get("task", "classification"), labels=list(d.get("labels") or []),
        preprocessing=dict(d.get("preprocessing") or {}), source=dict(d.get("source") or {}),
        calibration=dict(d.get("calibration") or {}), toolchain=dict(d.get("toolchain") or {}),
        check=dict(d.get("check") or {}), default_artifact=d.get("default_artifact", ""),
        skipped=dict(d.get("skipped") or {}),
        created=d.get("created", ""), schema_version=version,
    )


def read_manifest(bundle_dir: os.PathLike) -> Manifest:
    """Read and validate ``bundle_dir/manifest.json``.

    Raises:
        ModelLoadError: missing or unreadable manifest.
        IntegrityError: unknown schema version.
    """
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelLoadError(f"{bundle_dir}: no {MANIFEST_NAME} found; expected a bundle written by "
                             "`edgeport convert` (or pass a bare .tflite/.onnx file).")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e}); the bundle is corrupt, re-run `edgeport convert`.") from None
    return manifest_from_dict(d, str(path))


def verify_artifact(bundle_dir: os.PathLike, art: Artifact) -> Path:
    """Check the artifact file exists and its sha256 matches the manifest; return its path.

    Raises:
        IntegrityError: the file is missing or its hash differs (corrupt, truncated or tampered with).
    """
    path = Path(bundle_dir) / art.path
    if not path.is_file():
        raise IntegrityError(f"{path}: listed in the manifest as artifact {art.name!r} but missing.")
    got = sha256_file(path)
    if got != art.sha256:
        raise IntegrityError(
            f"{path}: sha256 mismatch (manifest {art.sha256[:12]}..., file {got[:12]}...); the file is corrupt, "
            "truncated or was changed after conversion. Re-copy the bundle or re-run `edgeport convert`."
        )
    return path


def write_manifest(bundle_dir: os.PathLike, manifest: Manifest) -> Path:
    """Write manifest.json atomically (temp file + rename) and return its path."""
    path = Path(bundle_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def atomic_write_bytes(path: os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))
