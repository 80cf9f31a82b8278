"""`edgeport parity`: every artifact against its Keras original on the whole held-out test set.

Each artifact runs through edgeport-runtime (the code path devices use) with every installed backend that can
run it. Thresholds come from the recipe table (:data:`edgeport.convert.recipes.RECIPES`), overridable per recipe
from a TOML file. The report is data; only the CLI turns a failed gate into exit code 1.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

import edgeport_runtime as er
from edgeport_runtime import backends as rt_backends
from edgeport_runtime.errors import InputError, UsageError, unknown_name
from edgeport_runtime.manifest import atomic_write_text, read_manifest, write_manifest

from .recipes import RECIPES, Gate, Recipe

WORST = 10  # disagreeing samples listed per artifact


@dataclass
class ArtifactParity:
    """Parity of one artifact run by one backend."""

    name: str
    recipe: str
    backend: str
    metric: str
    value: float
    keras_value: float
    delta_pp: Optional[float]  # accuracy delta in percentage points (classification)
    agreement: Optional[float]
    max_abs_diff: float
    mean_abs_diff: float
    max_diff_output_steps: Optional[float]  # int8 outputs: max difference in units of the output scale
    per_class_delta_pp: Dict[str, float] = field(default_factory=dict)
    worst_samples: List[int] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    diagnosis: Optional[Dict[str, Any]] = None

    @property
    def passed(self) -> bool:
        """True when every gated metric is within its threshold."""
        return not self.failures


@dataclass
class ParityReport:
    """All artifacts' parity, the Keras baseline and the gates that were applied."""

    bundle: str
    task: str
    samples: int
    keras: Dict[str, Any]
    artifacts: List[ArtifactParity]
    gates: Dict[str, Dict[str, Any]]

    @property
    def passed(self) -> bool:
        """True when every artifact passed on every backend."""
        return all(a.passed for a in self.artifacts)

    def failures(self) -> List[str]:
        """One line per failing artifact/backend/metric."""
        return [f"{a.name} [{a.backend}]: {f}" for a in self.artifacts for f in a.failures]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (parity.json)."""
        d = asdict(self)
        d["passed"] = self.passed
        for a, src in zip(d["artifacts"], self.artifacts):
            a["passed"] = src.passed
        return d


def gates_from_config(overrides: Dict[str, Dict[str, Any]]) -> Dict[Recipe, Gate]:
    """The recipe table's gates with per-recipe overrides; unknown recipes or gate keys are rejected."""
    gates = {r: spec.gate for r, spec in RECIPES.items()}
    keys = set(Gate.__dataclass_fields__)
    for name, values in overrides.items():
        try:
            r = Recipe(name)
        except ValueError:
            raise unknown_name("recipe in [parity.gates]", name, [x.value for x in RECIPES]) from None
        for k in values:
            if k not in keys:
                raise unknown_name(f"gate key for {name}", k, keys)
        gates[r] = replace(gates[r], **{k: float(v) for k, v in values.items()})
    return gates


def _eval_data(manifest, data: Optional[str]):
    from .pipeline import load_run_data, resolve_data

    run_dir = data or manifest.source.get("run_dir")
    if run_dir and Path(run_dir).is_dir() and (Path(run_dir) / "train.json").is_file():
        d = load_run_data(Path(run_dir))
    elif data:
        d = resolve_data(Path(manifest.source.get("path", "model")), data, 0)
    else:
        raise UsageError("the bundle does not name its training run; pass --data RUN_DIR or a dataset with the "
                         "held-out split to evaluate on.")
    return d


def _source_outputs(manifest, x: np.ndarray) -> np.ndarray:
    from .source import load_source

    path = manifest.source.get("path")
    if not path or not Path(path).exists():
        raise InputError(f"the bundle's source model {path!r} is gone; parity compares with the Keras original, "
                         "so keep it (or re-run `edgeport convert`).")
    return load_source(path).predict(x)


def _compare(art, backend: str, y: np.ndarray, ref: np.ndarray, labels: np.ndarray, task: str, x: np.ndarray,
             gate: Gate, class_names: List[str]) -> ArtifactParity:
    diff = np.abs(y - ref)
    out_scale = art.outputs[0].scale if art.outputs[0].quantized else None
    steps = float(diff.max() / out_scale) if out_scale else None
    if task == "autoencoder":
        flat = x.reshape(len(x), -1)
        mse, kmse = float(np.mean((y - flat) ** 2)), float(np.mean((ref - flat) ** 2))
        p = ArtifactParity(art.name, art.recipe, backend, "reconstruction_mse", mse, kmse, None, None,
                           float(diff.max()), float(diff.mean()), steps)
        if mse > gate.max_mse_ratio * kmse:
            p.failures.append(f"reconstruction MSE {mse:.5g} > {gate.max_mse_ratio:g} x Keras {kmse:.5g}")
    else:
        top, ktop = y.argmax(1), ref.argmax(1)
        acc, kacc = float((top == labels).mean()), float((ktop == labels).mean())
        agree = float((top == ktop).mean())
        per_class = {class_names[c] if c < len(class_names) else str(c):
                     round(100 * float((top[labels == c] == c).mean() - (ktop[labels == c] == c).mean()), 3)
                     for c in np.unique(labels)}
        dis = np.flatnonzero(top != ktop)
        worst = dis[np.argsort(-diff[dis].max(axis=1))][:WORST].tolist()
        p = ArtifactParity(art.name, art.recipe, backend, "accuracy", acc, kacc, round(100 * (acc - kacc), 4),
                           agree, float(diff.max()), float(diff.mean()), steps, per_class, worst)
        if -p.delta_pp > gate.max_drop_pp + 1e-9:
            p.failures.append(f"accuracy drop {-p.delta_pp:.2f} pp > {gate.max_drop_pp:g} pp")
        if agree < gate.min_agreement:
            p.failures.append(f"top-1 agreement {agree:.2%} < {gate.min_agreement:.1%}")
    if gate.max_abs_diff is not None and p.max_abs_diff > gate.max_abs_diff:
        p.failures.append(f"max |diff| {p.max_abs_diff:.3g} > {gate.max_abs_diff:g}")
    return p


def runnable_backends(fmt: str) -> List[str]:
    """Installed backends that run ``fmt`` artifacts, in preference order."""
    return [n for n in rt_backends.installed_backends() if rt_backends.BACKENDS[n].format == fmt]


def parity(bundle: str, data: Optional[str] = None, gate_overrides: Optional[Dict[str, Dict]] = None,
           diagnose: bool = True, write: bool = True) -> ParityReport:
    """Compare every artifact of ``bundle`` with the Keras original on the whole held-out test set.

    Args:
        bundle: bundle directory written by `edgeport convert`.
        data: the training run (or dataset) to evaluate on; default: the run the bundle was converted from.
        gate_overrides: {recipe: {gate key: value}} replacing the recipe table's thresholds.
        diagnose: run the layer-wise int8 diagnosis for failing int8 artifacts.
        write: store parity.json in the bundle and each artifact's result in manifest.json.

    Returns:
        A :class:`ParityReport` (check ``.passed``; it does not raise on a failed gate).
    """
    bdir = Path(bundle)
    man = read_manifest(bdir)
    d = _eval_data(man, data)
    x, labels = d.x_test.astype(np.float32), d.y_test
    ref = _source_outputs(man, x)
    gates = gates_from_config(gate_overrides or {})
    results = []
    for art in man.artifacts:
        gate = gates[Recipe(art.recipe)]
        for backend in runnable_backends(art.format):
            with er.load(bdir, backend=backend, artifact=art.name) as m:
                y = m.predict(x)
            results.append(_compare(art, backend, y, ref, labels, man.task, x, gate, man.labels))
    if not results:
        raise UsageError(f"{bundle}: no installed backend can run any artifact; install ai-edge-litert or "
                         "onnxruntime.")
    if man.task == "autoencoder":
        kmetric = {"metric": "reconstruction_mse", "value": float(np.mean((ref - x.reshape(len(x), -1)) ** 2))}
    else:
        kmetric = {"metric": "accuracy", "value": float((ref.argmax(1) == labels).mean())}
    report = ParityReport(str(bdir), man.task, int(len(x)), kmetric, results,
                          {r.value: asdict(g) for r, g in gates.items()})
    if diagnose:
        from .diagnose import diagnose_int8

        for p in results:
            if p.failures and RECIPES[Recipe(p.recipe)].quantization == "int8" and p.recipe.startswith("tflite"):
                p.diagnosis = diagnose_int8(bdir, man, man.artifact(p.name), d, x)
    if write:  # manifest first, parity.json last: make sees parity.json as newer than the manifest
        for art in man.artifacts:
            mine = [p for p in results if p.name == art.name]
            art.parity = {p.backend: {"passed": p.passed, "metric": p.metric, "value": p.value,
                                      "delta_pp": p.delta_pp, "agreement": p.agreement,
                                      "max_abs_diff": p.max_abs_diff} for p in mine}
        write_manifest(bdir, man)
        atomic_write_text(bdir / "parity.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
