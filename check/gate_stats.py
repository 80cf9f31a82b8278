"""Statistics of the parity gate: one-sided, paired, exact, with a third outcome for splits too small to decide.

A held-out split of n samples measures an accuracy only to about 100/n pp per sample, so a gate compares a
confidence *bound* with its threshold, never the point estimate:

* **fail**: the bound shows the artifact is worse than the threshold (at the gate's confidence level);
* **pass**: the bound shows it is within the threshold;
* **inconclusive**: the interval straddles the threshold; :func:`samples_needed` says how many samples, with the
  same observed rates, would decide it.

Accuracy delta (artifact minus reference, paired on the same samples): only the *discordant* samples carry
information (exact McNemar). Given m discordant samples, the number the artifact gets wrong where the reference
was right is Binomial(m, p); a Clopper-Pearson interval on p maps to delta = (m / n) (1 - 2p). Disagreement rate
(post-training recipes, whose weights are unchanged): Clopper-Pearson interval on k disagreeing of n.

A threshold of exactly 0 (float32 exports: "identical top-1") is a claim of identity, not a rate: one observed
difference disproves it and none passes it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from scipy.stats import beta

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
MAX_NEEDED = 10_000_000  # beyond this "samples needed" is reported as unreachable (observed rate ~ threshold)


@dataclass
class Check:
    """One gated (or only reported) quantity: observed value, two-sided interval, threshold and outcome.

    Values are in the unit named by ``unit`` ("pp" for accuracy deltas and disagreement rates).
    ``needed_n`` is set for inconclusive checks: held-out samples that would decide it at the observed rates.
    """

    name: str
    value: float
    low: Optional[float]  # None: not a statistical quantity (deterministic checks)
    high: Optional[float]
    threshold: Optional[float]
    outcome: str  # pass | fail | inconclusive | reported (not gated)
    unit: str = "pp"
    needed_n: Optional[int] = None
    message: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def clopper_pearson(k: int, n: int, confidence: float) -> Tuple[float, float]:
    """One-sided exact bounds (lower, upper) on a binomial rate, each at ``confidence``.

    Each bound alone holds with probability >= ``confidence``; together they form a two-sided interval at
    ``2 * confidence - 1`` (90% for 0.95).
    """
    if n <= 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def delta_bounds(losses: int, wins: int, n: int, confidence: float) -> Tuple[float, float]:
    """One-sided bounds (lower, upper) on the paired accuracy delta in pp (artifact minus reference).

    ``losses``: samples the reference gets right and the artifact wrong; ``wins``: the reverse. Conditional on
    the m = losses + wins discordant samples (exact McNemar): losses ~ Binomial(m, p), delta = (m/n)(1 - 2p).
    No discordant sample means the two made identical calls on this split: delta is 0 exactly.
    """
    m = losses + wins
    if n <= 0 or m == 0:
        return 0.0, 0.0
    p_lo, p_hi = clopper_pearson(losses, m, confidence)
    scale = 100.0 * m / n
    return scale * (1 - 2 * p_hi), scale * (1 - 2 * p_lo)


def _decide(low_bad: float, high_bad: float, threshold: float) -> str:
    """Outcome for a "badness" quantity (drop or disagreement) with one-sided bounds and a maximum allowed."""
    if low_bad > threshold + 1e-12:
        return FAIL
    if high_bad <= threshold + 1e-12:
        return PASS
    return INCONCLUSIVE


def samples_needed(decide: Callable[[int], str], n: int) -> int:
    """Smallest n' (> n) at which ``decide(n')`` -- the same observed rates on n' samples -- is no longer
    inconclusive; MAX_NEEDED when even that many would not decide (the observed rate sits on the threshold)."""
    hi = max(2 * n, n + 1)
    while decide(hi) == INCONCLUSIVE:
        if hi >= MAX_NEEDED:
            return MAX_NEEDED
        hi = min(MAX_NEEDED, hi * 2)
    lo = n  # decide(lo) is inconclusive
    while hi - lo > max(1, lo // 100):  # 1% resolution is plenty for "you would need about N samples"
        mid = (lo + hi) // 2
        if decide(mid) == INCONCLUSIVE:
            lo = mid
        else:
            hi = mid
    return hi


def drop_check(losses: int, wins: int, n: int, max_drop_pp: float, confidence: float,
               name: str = "accuracy drop") -> Check:
    """Gate ``-delta <= max_drop_pp``: never fails an artifact for being better than its reference."""
    delta = 100.0 * (wins - losses) / n if n else 0.0
    lo, hi = delta_bounds(losses, wins, n, confidence)
    if max_drop_pp <= 0:  # identity claim: any net loss disproves it, none passes it
        outcome = FAIL if losses > wins else PASS
    else:
        outcome = _decide(-hi, -lo, max_drop_pp)
    c = Check(name, delta, lo, hi, max_drop_pp, outcome)
    if outcome == INCONCLUSIVE:
        c.needed_n = samples_needed(
            lambda k: _decide(*(-b for b in reversed(delta_bounds(round(losses * k / n), round(wins * k / n), k,
                                                                  confidence))), max_drop_pp), n)
    c.message = describe(c, f"{name} {-delta:.2f} pp (delta {delta:+.2f}, {confidence:.0%} bounds "
                            f"[{lo:+.2f}, {hi:+.2f}]) vs max {max_drop_pp:g} pp")
    return c


def disagreement_check(disagree: int, n: int, min_agreement: float, confidence: float) -> Check:
    """Gate the top-1 disagreement rate at ``1 - min_agreement`` with exact one-sided binomial bounds."""
    rate = disagree / n if n else 0.0
    lo, hi = clopper_pearson(disagree, n, confidence)
    allowed = 1.0 - min_agreement
    if allowed <= 0:  # identity claim (float32 exports)
        outcome = FAIL if disagree > 0 else PASS
    else:
        outcome = _decide(lo, hi, allowed)
    c = Check("top-1 agreement", 100 * (1 - rate), 100 * (1 - hi), 100 * (1 - lo), 100 * min_agreement, outcome,
              unit="%")
    if outcome == INCONCLUSIVE:
        c.needed_n = samples_needed(
            lambda k: _decide(*clopper_pearson(round(disagree * k / n), k, confidence), allowed), n)
    c.message = describe(c, f"top-1 agreement {1 - rate:.2%} ({confidence:.0%} bounds [{1 - hi:.2%}, "
                            f"{1 - lo:.2%}]) vs min {min_agreement:.1%}")
    return c


def describe(c: Check, text: str) -> str:
    """``text`` with what the outcome means appended (fail: worse with confidence; inconclusive: samples needed)."""
    if c.outcome == FAIL:
        return f"{text}: worse with confidence"
    if c.outcome == INCONCLUSIVE:
        need = ("more than 10,000,000 samples (the observed value sits on the threshold)"
                if c.needed_n >= MAX_NEEDED else f"about {c.needed_n:,} held-out samples")
        return f"{text}: inconclusive on this split, deciding it needs {need}"
    return text


def paired_counts(pred: np.ndarray, ref_pred: np.ndarray, labels: np.ndarray) -> Tuple[int, int]:
    """(losses, wins) of ``pred`` against ``ref_pred``: samples only the reference / only the artifact gets right."""
    ok, ref_ok = pred == labels, ref_pred == labels
    return int(np.sum(ref_ok & ~ok)), int(np.sum(ok & ~ref_ok))


def outcome_of(checks) -> str:
    """fail if any gated check fails, else inconclusive if any is, else pass."""
    outs = {c.outcome for c in checks}
    return FAIL if FAIL in outs else INCONCLUSIVE if INCONCLUSIVE in outs else PASS
