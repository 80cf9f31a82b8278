"""The bundle manifest: the one schema shared by the toolkit (which writes it) and the runtime (which reads it).

A bundle is a directory (or a .tar.gz / .zip of one) holding model files and ``manifest.json``. The manifest is
plain JSON so a device needs only the standard library to read it. This module owns the schema: the toolkit
builds :class:`Manifest` objects and calls :func:`write_manifest`; the runtime calls :func:`read_manifest`.

Schema (version 1)::

    schema_version: 1
    created: ISO-8601 UTC time
    task: "classification" | "autoencoder"
    source: {path, sha256, kind, input_shape, run_dir, data: {data, seed, split}}
                   the Keras original (absolute paths on the converting machine; kind: keras | tf_keras |
                   saved_model) and what parity needs to re-create the held-out split
    labels: [str, ...]                   class names, index = output position
    preprocessing: {input_scale, input_offset, layout, color, raw_range, features,
                    standardized, feature_mean, feature_std, standardization_fitted_on}
                   model input = raw * input_scale + input_offset  (raw: pixel values, CSV features)
                   tabular data may add feature_mean/feature_std lists (standardized: true): then
                   model input = (raw * input_scale + input_offset - feature_mean) / feature_std
    calibration: {source, count, seed, stratified}
    toolchain: {package: version}
    default_artifact: the artifact a device loads when none is named
    skipped: {recipe: reason} recipes of an implicit "all" that do not apply to this model
    check: {inputs: "check_inputs.npy", keras_outputs: "check_keras.npy"}
                   a few held-out inputs and the Keras outputs on them; artifact["check_outputs"] holds the
                   outputs the toolkit saw, for smoke checks on a device
    artifacts: [{name, path, format, recipe, quantization, bytes, gzip_bytes, sha256, sparsity,
                 inputs: [TensorSpec], outputs: [TensorSpec], check_outputs, parity, extra}]
    TensorSpec: {name, shape (None = any batch), dtype, scale, zero_point}  scale/zero_point null when float

source, preprocessing, calibration and check are typed sections (:mod:`.sections`); keys they do not know are
kept and written back unchanged.
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
# contained_path lives in schema.py and is re-exported here: edgeport_runtime.manifest.contained_path is the one
# path rule the toolkit and the devices code call for every path they read from a file
from .schema import MAX_JSON_DEPTH, Fields, contained_path, json_depth_ok  # noqa: F401
from .sections import Calibration, Check, Preprocessing, Source

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
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source: Source = field(default_factory=Source)
    calibration: Calibration = field(default_factory=Calibration)
    toolchain: Dict[str, str] = field(default_factory=dict)
    check: Check = field(default_factory=Check)
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
        """The JSON-ready dict, schema_version first (the typed sections write themselves)."""
        return {"schema_version": self.schema_version, "artifacts": [asdict(a) for a in self.artifacts],
                "task": self.task, "labels": list(self.labels), "preprocessing": self.preprocessing.to_dict(),
                "source": self.source.to_dict(), "calibration": self.calibration.to_dict(),
                "toolchain": dict(self.toolchain), "check": self.check.to_dict(),
                "default_artifact": self.default_artifact, "skipped": dict(self.skipped), "created": self.created}


def sha256_file(path: os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


QUANT_DTYPES = ("int8", "uint8", "int16")
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few KB; refuse to parse a multi-GB "manifest"


def _spec(d: Any, where: str) -> TensorSpec:
    f = Fields(d, where)
    dtype = f.str("dtype", required=True)
    scale, zero_point = f.float("scale", positive=True), f.int("zero_point", nullable=True, minimum=-(2 ** 31))
    if (scale is None) != (zero_point is None):
        raise ModelLoadError(f"{where}: scale and zero_point must both be set (a quantized tensor) or both null, "
                             f"got scale={scale!r} zero_point={zero_point!r}; the manifest is corrupt.")
    return TensorSpec(name=f.str("name", required=True), shape=f.shape("shape"), dtype=dtype,
                      scale=scale, zero_point=zero_point)


def _artifact(a: Any, i: int, where: str) -> Artifact:
    f = Fields(a, f"{where}: artifact #{i}")
    name = f.str("name", required=True)
    f.where = f"{where}: artifact #{i} ({name!r})"
    fmt = f.str("format", required=True)
    if fmt not in FORMATS:
        raise ModelLoadError(f"{where}: artifact {name!r} has unknown format {fmt!r}; "
                             f"expected one of {', '.join(FORMATS)}.")
    sha = f.str("sha256", required=True)
    specs = {}
    for kind in ("inputs", "outputs"):
        specs[kind] = [_spec(s, f"{where}: artifact {name} {kind[:-1]} #{j}")
                       for j, s in enumerate(f.list(kind, required=True))]
    parity = f.dict("parity")
    return Artifact(
        name=name, path=f.path("path", nullable=False, required=True), format=fmt,
        recipe=f.str("recipe", default=""), sha256=sha, bytes=f.int("bytes", required=True),
        inputs=specs["inputs"], outputs=specs["outputs"], quantization=f.str("quantization", default="float32"),
        gzip_bytes=f.int("gzip_bytes", nullable=True), sparsity=f.float("sparsity"),
        check_outputs=f.path("check_outputs"), parity=parity, extra=f.dict("extra") or {},
    )


def manifest_from_dict(d: Any, where: str = MANIFEST_NAME) -> Manifest:
    """Parse a manifest dict, checking the schema version, every field's type and every path.

    Raises:
        IntegrityError: unknown schema version, or a path that is absolute, contains ``..``, a backslash or NUL.
        ModelLoadError: a required field is missing or a field has the wrong type (the message names it).
    """
    f = Fields(d, where)
    version = d.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # noqa: E721  (true == 1 must not pass)
        raise IntegrityError(
            f"{where}: unknown manifest schema_version {version!r}; this edgeport-runtime reads version "
            f"{SCHEMA_VERSION}. Upgrade edgeport-runtime (or re-run `edgeport convert`) so both sides agree."
        )
    if not json_depth_ok(d):
        raise ModelLoadError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels; not an edgeport manifest.")
    arts = [_artifact(a, i, where) for i, a in enumerate(f.list("artifacts") or [])]
    if not arts:
        raise ModelLoadError(f"{where}: the bundle lists no artifacts; re-run `edgeport convert`.")
    labels = f.list("labels") or []
    if not all(isinstance(x, str) for x in labels):
        raise ModelLoadError(f"{where}: field 'labels' must be a list of strings; the manifest is corrupt.")
    return Manifest(
        artifacts=arts, task=f.str("task", default="classification"), labels=list(labels),
        preprocessing=Preprocessing.from_dict(f.dict("preprocessing"), f"{where}: preprocessing"),
        source=Source.from_dict(f.dict("source"), f"{where}: source"),
        calibration=Calibration.from_dict(f.dict("calibration"), f"{where}: calibration"),
        toolchain=dict(f.dict("toolchain") or {}),
        check=Check.from_dict(f.dict("check"), f"{where}: check"), default_artifact=f.str("default_artifact", default="", nullable=True) or "",
        skipped=dict(f.dict("skipped") or {}), created=f.str("created", default="", nullable=True) or "",
        schema_version=version,
    )


def read_manifest(bundle_dir: os.PathLike) -> Manifest:
    """Read and validate ``bundle_dir/manifest.json``.

    Raises:
        ModelLoadError: missing, oversized or unreadable manifest, or a field of the wrong type.
        IntegrityError: unknown schema version, or a path that leaves the bundle.
    """
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelLoadError(f"{bundle_dir}: no {MANIFEST_NAME} found; expected a bundle written by "
                             "`edgeport convert` (or pass a bare .tflite/.onnx file).")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ModelLoadError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not an edgeport manifest.")
        d = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, and ints of > 4300 digits
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: not valid JSON ({msg}); the bundle is corrupt, re-run `edgeport convert`."
                             ) from None
    except RecursionError:
        raise ModelLoadError(f"{path}: JSON nested too deeply to parse; not an edgeport manifest.") from None
    return manifest_from_dict(d, str(path))


def verify_artifact(bundle_dir: os.PathLike, art: Artifact) -> Path:
    """Check the artifact path stays in the bundle, the file exists and its sha256 matches; return its path.

    Raises:
        IntegrityError: the path leaves the bundle, the file is missing or its hash differs (corrupt, truncated
            or tampered with). The path is checked before any byte is read.
    """
    path = contained_path(bundle_dir, art.path, f"artifact {art.name!r} path")
    if not path.is_file():
        raise IntegrityError(f"{path}: listed in the manifest as artifact {art.name!r} but missing.")
    try:
        got = sha256_file(path)
    except OSError as e:  # permissions, a directory named like the file, an I/O error
        raise ModelLoadError(f"{path}: cannot read artifact {art.name!r} ({e.strerror or e}).") from None
    if got != art.sha256:
        raise IntegrityError(
            f"{path}: sha256 mismatch (manifest {art.sha256[:12]}..., file {got[:12]}...); the file is corrupt, "
            "truncated or was changed after conversion. Re-copy the bundle or re-run `edgeport convert`."
        )
    return path


def load_npy(path: os.PathLike, what: str) -> "np.ndarray":
    """Load a numeric .npy file named by a manifest (no pickles); any failure is one ModelLoadError."""
    import numpy as np  # deferred: the manifest module is read by tools that need only the JSON

    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:  # OSError, ValueError, EOFError, ... from a corrupt or truncated file
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelLoadError(f"{path}: cannot read {what} ({msg}); the bundle is corrupt, re-copy it.") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        raise ModelLoadError(f"{path}: {what} must be a numeric array, got dtype {getattr(x, 'dtype', '?')}.")
    return x


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
