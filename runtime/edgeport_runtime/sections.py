"""Typed manifest sections: source, preprocessing, calibration and check.

Each section is a dataclass with ``from_dict`` (validating every known key's type, the way :mod:`.schema` checks
the rest of the manifest) and ``to_dict`` (the JSON form; ``from_dict(to_dict())`` gives the same object).
Keys a section does not know are kept in ``extra`` and written back unchanged, so a manifest from a newer
toolkit still loads and round-trips. Optional keys that are absent stay absent (``None``) when written.

:class:`Preprocessing` is the one definition of the preprocessing keys: the toolkit's datasets write them and the
runtime's input readers apply them (``model input = raw * input_scale + input_offset``, then, for standardized
tabular data, ``(x - feature_mean) / feature_std`` per feature).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from .errors import ModelLoadError
from .schema import Fields


class _Section:
    """to_dict / from_dict shared by the sections: known keys typed by ``_read``, unknown keys kept in ``extra``."""

    extra: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form: known keys that are set, then the unknown keys as they were read."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: (v.to_dict() if isinstance(v, _Section) else list(v) if isinstance(v, list) else v)
               for k, v in d.items() if v is not None}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str):
        """Parse and type-check one section (``None`` or absent: an empty section)."""
        f = Fields({} if d is None else d, where)
        known = {x.name for x in fields(cls)} - {"extra"}
        obj = cls(**cls._read(f))
        obj.extra = {k: v for k, v in f.d.items() if k not in known}
        return obj

    @classmethod
    def _read(cls, f: Fields) -> Dict[str, Any]:  # pragma: no cover - every section overrides it
        raise NotImplementedError


@dataclass
class Preprocessing(_Section):
    """How raw inputs (pixels, CSV features) become model inputs.

    ``model input = raw * input_scale + input_offset``; images are first mapped from 8-bit pixels onto
    ``raw_range`` when it is not [0, 255]; when ``standardized``, each feature then becomes
    ``(x - feature_mean) / feature_std`` with the training split's statistics.
    """

    input_scale: Optional[float] = None  # None: 1.0
    input_offset: Optional[float] = None  # None: 0.0
    layout: Optional[str] = None  # NHWC (images), NTC (sequences)
    color: Optional[str] = None  # grayscale | rgb
    raw_range: Optional[List[float]] = None  # [low, high] of the raw values the model was trained on
    features: Optional[List[str]] = None  # tabular column names, in input order
    image_size: Optional[List[int]] = None  # [height, width] images were resized to (image folders)
    standardized: Optional[bool] = None  # tabular: whether feature_mean/feature_std apply
    feature_mean: Optional[List[float]] = None
    feature_std: Optional[List[float]] = None
    standardization_fitted_on: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """input_scale, 1.0 when not recorded."""
        return 1.0 if self.input_scale is None else self.input_scale

    @property
    def offset(self) -> float:
        """input_offset, 0.0 when not recorded."""
        return 0.0 if self.input_offset is None else self.input_offset

    @classmethod
    def _read(cls, f: Fields) -> Dict[str, Any]:
        return {"input_scale": f.float("input_scale"), "input_offset": f.float("input_offset"),
                "layout": f.str("layout", nullable=True), "color": f.str("color", nullable=True),
                "raw_range": _numbers(f, "raw_range", length=2), "features": _strings(f, "features"),
                "image_size": f.shape("image_size") if f.d.get("image_size") is not None else None,
                "standardized": f.bool("standardized"), "feature_mean": _numbers(f, "feature_mean"),
                "feature_std": _numbers(f, "feature_std"),
                "standardization_fitted_on": f.str("standardization_fitted_on", nullable=True)}


@dataclass
class DataRecord(_Section):
    """What `edgeport parity` needs to re-create the held-out split: --data as given, the seed, how it split."""

    data: Optional[str] = None
    seed: Optional[int] = None
    split: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, f: Fields) -> Dict[str, Any]:
        return {"data": f.str("data", nullable=True), "seed": f.int("seed", nullable=True),
                "split": f.str("split", nullable=True)}


@dataclass
class Source(_Section):
    """The model the bundle was converted from (absolute paths on the converting machine)."""

    path: Optional[str] = None
    sha256: Optional[str] = None
    kind: Optional[str] = None  # keras | tf_keras | saved_model
    input_shape: Optional[List[Optional[int]]] = None  # one sample, without the batch dimension
    run_dir: Optional[str] = None  # the training run directory, when the model came from one
    data: Optional[DataRecord] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, f: Fields) -> Dict[str, Any]:
        data = f.dict("data")
        return {"path": f.str("path", nullable=True), "sha256": f.str("sha256", nullable=True),
                "kind": f.str("kind", nullable=True),
                "input_shape": f.shape("input_shape") if f.d.get("input_shape") is not None else None,
                "run_dir": f.str("run_dir", nullable=True),
                "data": None if data is None else DataRecord.from_dict(data, f"{f.where}.data")}


@dataclass
class Calibration(_Section):
    """The representative samples full-integer recipes were calibrated on."""

    source: Optional[str] = None
    count: Optional[int] = None
    seed: Optional[int] = None
    stratified: Optional[bool] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, f: Fields) -> Dict[str, Any]:
        return {"source": f.str("source", nullable=True), "count": f.int("count", nullable=True),
                "seed": f.int("seed", nullable=True), "stratified": f.bool("stratified")}


@dataclass
class Check(_Section):
    """Held-out inputs stored in the bundle and the Keras outputs on them (for smoke checks on a device).

    Every string in this section names a file of the bundle, so each is checked as a relative path.
    """

    inputs: Optional[str] = None
    keras_outputs: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read(cls, f: Fields) -> Dict[str, Any]:
        for key, value in f.d.items():  # unknown keys too: a newer toolkit's check files are bundle files
            if key not in ("inputs", "keras_outputs") and isinstance(value, (str, list, dict)):
                f.path(key)
        return {"inputs": f.path("inputs"), "keras_outputs": f.path("keras_outputs")}


def _numbers(f: Fields, key: str, length: Optional[int] = None) -> Optional[List[float]]:
    v = f.list(key)
    if v is None:
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) or (
            length is not None and len(v) != length):
        raise ModelLoadError(f"{f.where}: field {key!r} must be a list of "
                             f"{f'{length} ' if length else ''}numbers; the manifest is corrupt, re-create the "
                             "bundle.")
    return list(v)  # as written (an integer stays an integer: the JSON round-trips unchanged)


def _strings(f: Fields, key: str) -> Optional[List[str]]:
    v = f.list(key)
    if v is None:
        return None
    if not all(isinstance(x, str) for x in v):
        raise ModelLoadError(f"{f.where}: field {key!r} must be a list of strings; the manifest is corrupt, "
                             "re-create the bundle.")
    return list(v)
