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
from edgeport_runtime.kinds import Format, Quantization
from edgeport_runtime.manifest import atomic_write_text, read_manifest, write_manifest

from ..convert.recipes import RECIPES, Gate, Recipe
from ..convert.source import load_source
from ..data.run import is_run_dir, load_run_data, resolve_data
from . import gate_stats as gs
from .diagnose import diagnose_int8
from .fidelity import ACCURACY_NOT_MEASURED, fidelity

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
    output: Optional[str] = None  # models with several outputs: which output this row gates

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
    accuracy_measured: bool = True  # False: no labels, fidelity to Keras only
    note: Optional[str] = None  # said plainly on screen and in the report (e.g. accuracy not measured)

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


def _rec(section, key: str, default=None):
    """``key`` of a manifest section, whether it is a plain dict or a typed section (keys it does not know are
    kept in its ``extra``); ``default`` when absent or None."""
    if isinstance(section, dict):
        v = section.get(key)
    else:
        v = getattr(section, key, None)
        if v is None:
            v = (getattr(section, "extra", None) or {}).get(key)
    return default if v is None else v


def _eval_data(manifest, data: Optional[str], eval_path: Optional[str] = None):
    """The held-out split: --eval / --data, else the training run or the data source, seed, preprocessing
    options and --eval that `convert` recorded."""
    from ..data.unlabeled import InputOptions

    recorded = _rec(manifest.source, "data") or {}
    run_dir = data or _rec(manifest.source, "run_dir")
    if eval_path is None and run_dir and is_run_dir(Path(run_dir)):
        return load_run_data(Path(run_dir))
    model = Path(_rec(manifest.source, "path", "model"))
    opts = InputOptions.from_record(_rec(recorded, "inputs"))
    shape = _rec(manifest.source, "input_shape")
    shape = tuple(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else None
    seed = int(_rec(recorded, "seed", 0))
    eval_path = eval_path or _rec(recorded, "eval")
    for what, arg in (("--eval", eval_path), ("--data", data or _rec(recorded, "data"))):
        if arg and Path(arg).is_absolute() and not Path(arg).exists():
            raise InputError(f"the bundle was converted with {what} {arg}, which is gone; pass {what} with the "
                             "same data to re-create its held-out split.")
    ins = _rec(manifest.source, "inputs") or []
    if len(ins) > 1:
        from ..convert.multiio import load_multi_data

        return load_multi_data(data or _rec(recorded, "data"), [(n, tuple(s)) for n, s in ins], seed, eval_path,
                               manifest.task)
    if data:
        return resolve_data(model, data, seed, opts, eval_path, model_shape=shape)
    if _rec(recorded, "data"):
        # same argument, seed and options as `convert`: the same held-out split
        return resolve_data(model, _rec(recorded, "data"), seed, opts, eval_path, model_shape=shape)
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
             gate: Gate, class_names: List[str], out_index: int = 0) -> ArtifactParity:
    spec = RECIPES[Recipe(art.recipe)]
    diff = np.abs(y - ref)
    out = art.outputs[out_index]
    out_scale = out.scale if out.quantized else None
    with np.errstate(invalid="ignore"):
        steps = float(diff.max() / out_scale) if out_scale else None
    bad_art, bad_ref = _nonfinite(y), _nonfinite(ref)
    checks: List[gs.Check] = []
    if labels is None and task != "autoencoder":  # no labels: fidelity to Keras only
        fid = fidelity(y, ref, task, gate.min_agreement, gate.confidence, WORST)
        p = ArtifactParity(art.name, art.recipe, backend, fid.metric, fid.value, fid.keras_value, None,
                           fid.agreement, float(diff.max()), float(diff.mean()), steps, {}, fid.worst_samples)
        checks.extend(fid.checks)
    elif task == "autoencoder":
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


def _feed(m, x: np.ndarray):
    """Packed samples of a several-input model (see edgeport.convert.multiio) as a list in input order."""
    if len(m.inputs) < 2:
        return x
    from ..convert.multiio import unpack

    return unpack(x, [s.shape[1:] for s in m.inputs])


def parity(bundle: str, data: Optional[str] = None, gate_overrides: Optional[Dict[str, Dict]] = None,
           diagnose: bool = True, write: bool = True, eval_path: Optional[str] = None,
           label_output: Optional[str] = None) -> ParityReport:
    """Compare every artifact of ``bundle`` with the Keras original on the whole held-out test set.

    Args:
        bundle: bundle directory written by `edgeport convert`.
        data: the training run (or dataset) to evaluate on; default: the run the bundle was converted from.
        eval_path: labelled samples to measure accuracy on (default: the --eval `convert` recorded, if any).
        label_output: several outputs: the one the labels belong to (default: as converted, else the first).
        gate_overrides: {recipe: {gate key: value}} replacing the recipe table's thresholds.
        diagnose: run the layer-wise int8 diagnosis for failing int8 artifacts.
        write: store parity.json in the bundle and each artifact's result in manifest.json.

    Returns:
        A :class:`ParityReport` (check ``.passed``; it does not raise on a failed gate).
    """
    bdir = Path(bundle)
    man = read_manifest(bdir)
    d = _eval_data(man, data, eval_path)
    x, labels = d.x_test.astype(np.float32), d.y_test
    ref = _source_outputs(man, x)
    gates = gates_from_config(gate_overrides or {})
    results = []
    outputs = [n for n, _ in _rec(man.source, "outputs", [])]
    label_output = label_output or _rec(man.source, "label_output") or (outputs[0] if outputs else None)
    if outputs and label_output not in outputs:
        raise unknown_name("--label-output", label_output, outputs)
    for art in man.artifacts:
        gate = gates[Recipe(art.recipe)]
        for backend in rt_backends.runnable_backends(art.format, art.quantization):
            with er.load(bdir, backend=backend, artifact=art.name) as m:
                y = m.predict(_feed(m, x))
            if not isinstance(ref, list):
                results.append(_compare(art, backend, y, ref, labels, man.task, x, gate, man.labels))
                continue
            for j, name in enumerate(outputs):  # every output gated: accuracy on the labelled one, fidelity else
                lab = labels if name == label_output else None
                p = _compare(art, backend, y[j], ref[j], lab, man.task, x, gate, man.labels, j)
                p.output = name
                results.append(p)
    if not results:
        raise UsageError(f"{bundle}: no installed backend can run any artifact; install ai-edge-litert or "
                         "onnxruntime.")
    if isinstance(ref, list):
        ref = ref[outputs.index(label_output)]
        results_main = [p for p in results if p.output == label_output]
    else:
        results_main = results
    if man.task == "autoencoder":
        kmetric = {"metric": "reconstruction_mse", "value": float(np.mean((ref - x.reshape(len(x), -1)) ** 2))}
    elif labels is None:
        kmetric = {"metric": results_main[0].metric, "value": results_main[0].keras_value}
    else:
        kmetric = {"metric": "accuracy", "value": float((ref.argmax(1) == labels).mean())}
    report = ParityReport(str(bdir), man.task, int(len(x)), kmetric, results,
                          {r.value: asdict(g) for r, g in gates.items()})
    if labels is None and man.task != "autoencoder":
        report.accuracy_measured, report.note = False, ACCURACY_NOT_MEASURED
    if diagnose:
        for p in results:
            spec = RECIPES[Recipe(p.recipe)]
            if (p.failures and spec.quantization is Quantization.INT8 and spec.format is Format.TFLITE
                    and p.output is None):  # the layer-wise diagnosis runs single-input/output models
                p.diagnosis = diagnose_int8(bdir, man, man.artifact(p.name), d, x)
    if write:  # manifest first, parity.json last: make sees parity.json as newer than the manifest
        for art in man.artifacts:
            mine = [p for p in results if p.name == art.name]
            art.parity = {p.backend if p.output is None else f"{p.backend}/{p.output}": {"passed": p.passed, "outcome": p.outcome, "metric": p.metric, "value": p.value,
                                      "delta_pp": p.delta_pp, "agreement": p.agreement,
                                      "max_abs_diff": p.max_abs_diff} for p in mine}
        write_manifest(bdir, man)
        atomic_write_text(bdir / "parity.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
