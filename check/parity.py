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
from edgeport_runtime.sections import DataRecord

from ..convert.recipes import RECIPES, Gate, Recipe
from ..convert.source import load_source
from ..data.run import is_run_dir, load_run_data, resolve_data
from . import gate_stats as gs
from .diagnose import diagnose_int8

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
    inconclusive: List[str] = field(default_factory=list)  # gates the split is too small to decide
    checks: List[Dict[str, Any]] = field(default_factory=list)  # every gate: value, bounds, threshold, outcome
    delta_low_pp: Optional[float] = None  # one-sided confidence bounds on delta_pp
    delta_high_pp: Optional[float] = None
    diagnosis: Optional[Dict[str, Any]] = None

    @property
    def passed(self) -> bool:
        """True when no gate failed (an inconclusive gate is not a failure; see :attr:`outcome`)."""
        return not self.failures

    @property
    def outcome(self) -> str:
        """pass, fail or inconclusive."""
        return "fail" if self.failures else "inconclusive" if self.inconclusive else "pass"


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

    def inconclusive(self) -> List[str]:
        """One line per artifact/backend/metric the held-out split is too small to decide."""
        return [f"{a.name} [{a.backend}]: {f}" for a in self.artifacts for f in a.inconclusive]

    def counts(self) -> Dict[str, int]:
        """Artifact/backend pairs per outcome."""
        out = {"pass": 0, "fail": 0, "inconclusive": 0}
        for a in self.artifacts:
            out[a.outcome] += 1
        return out

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (parity.json)."""
        d = asdict(self)
        d["passed"] = self.passed
        d["counts"] = self.counts()
        for a, src in zip(d["artifacts"], self.artifacts):
            a["passed"] = src.passed
            a["outcome"] = src.outcome
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
        try:
            vals = {k: float(v) for k, v in values.items()}
        except (TypeError, ValueError):
            raise UsageError(f"[parity.gates.{name}]: gate values must be numbers, got {values}.") from None
        for k, v in vals.items():
            lo, hi = _GATE_RANGES.get(k, (0.0, float("inf")))
            if not lo <= v <= hi:
                raise UsageError(f"[parity.gates.{name}] {k} = {v:g} is outside [{lo:g}, {hi:g}]; "
                                 f"{_GATE_MEANING.get(k, 'a threshold')}.")
        gates[r] = replace(gates[r], **vals)
    return gates


# Valid ranges of gate keys (others: any non-negative number)
_GATE_RANGES = {"min_agreement": (0.0, 1.0), "confidence": (0.5, 0.9999)}
_GATE_MEANING = {"min_agreement": "it is a fraction of samples (0.97 = 97%)",
                 "confidence": "it is a one-sided confidence level (0.95 = 95%)"}


def _eval_data(manifest, data: Optional[str]):
    """The held-out split: --data, else the training run or the data source (and seed) `convert` recorded."""
    recorded = manifest.source.data or DataRecord()
    seed = int(recorded.seed or 0)
    run_dir = data or manifest.source.run_dir
    if run_dir and is_run_dir(Path(run_dir)):
        return load_run_data(Path(run_dir))
    model = Path(manifest.source.path or "model")
    if data:
        return resolve_data(model, data, seed)
    if recorded.data:
        arg = recorded.data
        if Path(arg).is_absolute() and not Path(arg).exists():
            raise InputError(f"the bundle was converted with --data {arg}, which is gone; pass --data with the same "
                             "data to re-create its held-out split.")
        # same argument and seed as `convert`: the same stratified held-out split
        return resolve_data(model, arg, seed)
    raise UsageError("the bundle does not name its training run or data; pass --data RUN_DIR or the dataset it "
                     "was converted with.")


def _source_outputs(manifest, x: np.ndarray) -> np.ndarray:
    path = manifest.source.path
    if not path or not Path(path).exists():
        raise InputError(f"the bundle's source model {path!r} is gone; parity compares with the Keras original, "
                         "so keep it (or re-run `edgeport convert`).")
    return load_source(path).predict(x)


def _nonfinite(a: np.ndarray) -> int:
    """Samples with any NaN or Inf output."""
    return int(np.sum(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)))


def _class_drop_check(top, ktop, labels, class_names, gate: Gate) -> gs.Check:
    """Worst per-class drop, each class decided with the same paired bounds on its own samples."""
    worst, outcome, needed, name = None, gs.PASS, None, ""
    n = len(labels)
    for c in np.unique(labels):
        sel = labels == c
        losses, wins = gs.paired_counts(top[sel], ktop[sel], labels[sel])
        chk = gs.drop_check(losses, wins, int(sel.sum()), gate.max_class_drop_pp, gate.confidence)
        label = class_names[c] if c < len(class_names) else str(c)
        if worst is None or -chk.value > -worst.value:
            worst, name = chk, label
        if chk.outcome == gs.FAIL or (chk.outcome == gs.INCONCLUSIVE and outcome == gs.PASS):
            outcome = chk.outcome
        if chk.needed_n:  # the class needs needed_n samples; at the split's class share that is this many in all
            needed = max(needed or 0, int(np.ceil(chk.needed_n * n / sel.sum())))
    chk = gs.Check("worst per-class drop", worst.value, worst.low, worst.high, gate.max_class_drop_pp, outcome,
                   needed_n=needed if outcome == gs.INCONCLUSIVE else None)
    text = (f"worst per-class drop {-worst.value:.2f} pp (class {name}, {gate.confidence:.0%} bounds "
            f"[{worst.low:+.2f}, {worst.high:+.2f}]) vs max {gate.max_class_drop_pp:g} pp")
    chk.message = gs.describe(chk, text) if outcome != gs.FAIL else f"{text}: a class is worse with confidence"
    return chk


def _compare(art, backend: str, y: np.ndarray, ref: np.ndarray, labels: np.ndarray, task: str, x: np.ndarray,
             gate: Gate, class_names: List[str]) -> ArtifactParity:
    spec = RECIPES[Recipe(art.recipe)]
    diff = np.abs(y - ref)
    out_scale = art.outputs[0].scale if art.outputs[0].quantized else None
    with np.errstate(invalid="ignore"):
        steps = float(diff.max() / out_scale) if out_scale else None
    bad_art, bad_ref = _nonfinite(y), _nonfinite(ref)
    checks: List[gs.Check] = []
    if task == "autoencoder":
        flat = x.reshape(len(x), -1)
        mse, kmse = float(np.mean((y - flat) ** 2)), float(np.mean((ref - flat) ** 2))
        p = ArtifactParity(art.name, art.recipe, backend, "reconstruction_mse", mse, kmse, None, None,
                           float(diff.max()), float(diff.mean()), steps)
        # a ratio of two means over the whole split: deterministic given the split, so decided directly
        ok = mse <= gate.max_mse_ratio * kmse
        checks.append(gs.Check("reconstruction MSE ratio", mse / kmse if kmse else float("inf"), None,
                               None, gate.max_mse_ratio, gs.PASS if ok else gs.FAIL, unit="x",
                               message=f"reconstruction MSE {mse:.5g} {'<=' if ok else '>'} "
                                       f"{gate.max_mse_ratio:g} x Keras {kmse:.5g}"))
    else:
        top, ktop = y.argmax(1), ref.argmax(1)
        n = len(labels)
        acc, kacc = float((top == labels).mean()), float((ktop == labels).mean())
        disagree = int(np.sum(top != ktop))
        agree = 1.0 - disagree / n
        per_class = {class_names[c] if c < len(class_names) else str(c):
                     round(100 * float((top[labels == c] == c).mean() - (ktop[labels == c] == c).mean()), 3)
                     for c in np.unique(labels)}
        dis = np.flatnonzero(top != ktop)
        worst = dis[np.argsort(-np.nan_to_num(diff[dis], nan=np.inf).max(axis=1))][:WORST].tolist()
        p = ArtifactParity(art.name, art.recipe, backend, "accuracy", acc, kacc, round(100 * (acc - kacc), 4),
                           agree, float(diff.max()), float(diff.mean()), steps, per_class, worst)
        losses, wins = gs.paired_counts(top, ktop, labels)
        checks.append(gs.drop_check(losses, wins, n, gate.max_drop_pp, gate.confidence))
        agreement = gs.disagreement_check(disagree, n, gate.min_agreement, gate.confidence)
        if spec.fine_tunes:  # a different model: judged on what it gets right, not on matching the old weights
            checks.append(_class_drop_check(top, ktop, labels, class_names, gate))
            agreement.outcome, agreement.message = "reported", agreement.message.split(": inconclusive")[0]
            agreement.needed_n = None
        checks.append(agreement)
        p.delta_low_pp, p.delta_high_pp = checks[0].low, checks[0].high
    if gate.max_abs_diff is not None and not spec.fine_tunes:
        ok = p.max_abs_diff <= gate.max_abs_diff  # NaN compares False: fails
        checks.append(gs.Check("max |diff|", p.max_abs_diff, None, None, gate.max_abs_diff,
                               gs.PASS if ok else gs.FAIL, unit="abs",
                               message=f"max |diff| {p.max_abs_diff:.3g} {'<=' if ok else '>'} {gate.max_abs_diff:g}"))
    if bad_art or bad_ref:  # NaN/Inf: every comparison above is meaningless, and NaN never exceeds a threshold
        who = []
        if bad_art:
            who.append(f"the artifact outputs NaN/Inf on {bad_art} of {len(y)} samples")
        if bad_ref:
            who.append(f"the Keras reference outputs NaN/Inf on {bad_ref} of {len(ref)} samples (the source "
                       "model's weights are broken: retrain it)")
        checks.append(gs.Check("finite outputs", float(bad_art + bad_ref), None, None, 0.0, gs.FAIL,
                               unit="samples", message="; ".join(who)))
    p.checks = [c.to_dict() for c in checks]
    p.failures = [c.message for c in checks if c.outcome == gs.FAIL]
    p.inconclusive = [c.message for c in checks if c.outcome == gs.INCONCLUSIVE]
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
        for p in results:
            if p.failures and RECIPES[Recipe(p.recipe)].quantization == "int8" and p.recipe.startswith("tflite"):
                p.diagnosis = diagnose_int8(bdir, man, man.artifact(p.name), d, x)
    if write:  # manifest first, parity.json last: make sees parity.json as newer than the manifest
        for art in man.artifacts:
            mine = [p for p in results if p.name == art.name]
            art.parity = {p.backend: {"passed": p.passed, "outcome": p.outcome, "metric": p.metric, "value": p.value,
                                      "delta_pp": p.delta_pp, "agreement": p.agreement,
                                      "max_abs_diff": p.max_abs_diff} for p in mine}
        write_manifest(bdir, man)
        atomic_write_text(bdir / "parity.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
