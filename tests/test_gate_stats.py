"""The parity gate's statistics on constructed predictions: one-sided, paired, exact, with an inconclusive outcome."""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binomtest

from edgeport.check import gate_stats as gs
from edgeport.check.parity import _compare
from edgeport.convert.recipes import RECIPES, Recipe

CONF = 0.95


def _predictions(n, ref_acc, losses, wins, classes=10, seed=0):
    """labels, reference predictions with accuracy ref_acc, and artifact predictions that differ from the
    reference on exactly ``losses`` samples the reference got right and ``wins`` it got wrong."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ref = labels.copy()
    wrong = rng.choice(n, int(round((1 - ref_acc) * n)), replace=False)
    ref[wrong] = (labels[wrong] + 1) % classes
    art = ref.copy()
    right = np.setdiff1d(np.arange(n), wrong)
    art[right[:losses]] = (labels[right[:losses]] + 2) % classes
    art[wrong[:wins]] = labels[wrong[:wins]]
    return labels, ref, art


def _onehot(pred, classes=10):
    return np.eye(classes, dtype=np.float32)[pred]


def _art(recipe):
    return SimpleNamespace(name=recipe, recipe=recipe, outputs=[SimpleNamespace(quantized=False, scale=None)])


def _parity(recipe, labels, ref, art, y=None, refout=None):
    y = _onehot(art) if y is None else y
    refout = _onehot(ref) if refout is None else refout
    x = np.zeros((len(labels), 1), np.float32)
    return _compare(_art(recipe), "litert", y, refout, labels, "classification", x, RECIPES[Recipe(recipe)].gate,
                    [])


def test_clopper_pearson_matches_closed_form_and_scipy():
    n = 360
    lo, hi = gs.clopper_pearson(0, n, CONF)
    assert lo == 0 and hi == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)  # (1 - p)^n = alpha
    lo, hi = gs.clopper_pearson(n, n, CONF)
    assert hi == 1 and lo == pytest.approx(0.05 ** (1 / n), rel=1e-9)  # p^n = alpha
    ci = binomtest(7, 200).proportion_ci(confidence_level=0.90, method="exact")  # two-sided 90% = two 95% bounds
    assert gs.clopper_pearson(7, 200, CONF) == pytest.approx((ci.low, ci.high), rel=1e-7)


def test_three_pp_loss_on_2000_samples_fails():
    labels, ref, art = _predictions(2000, 0.95, losses=80, wins=20)  # net 60 samples = 3.00 pp worse
    losses, wins = gs.paired_counts(art, ref, labels)
    assert (losses, wins) == (80, 20)
    chk = gs.drop_check(losses, wins, 2000, 1.0, CONF)
    assert chk.outcome == gs.FAIL and chk.value == pytest.approx(-3.0)
    # McNemar oracle: 80 of 100 discordant against the artifact is far beyond chance
    assert binomtest(80, 100, 0.5, alternative="greater").pvalue < 1e-8
    p = _parity("tflite-int8", labels, ref, art)
    assert p.outcome == "fail" and any(f.startswith("accuracy drop 3.00 pp") for f in p.failures)


def test_fine_tuned_artifact_better_than_keras_passes():
    """The mnist/resnet8 case: QAT 7.1 pp better than Keras, agreement 90.9%, must not fail."""
    labels, ref, art = _predictions(1000, 0.80, losses=10, wins=81)
    p = _parity("tflite-int8-qat", labels, ref, art)
    assert p.agreement == pytest.approx(0.909) and p.delta_pp == pytest.approx(7.1)
    assert p.outcome == "pass", p.failures + p.inconclusive
    agreement = next(c for c in p.checks if c["name"] == "top-1 agreement")
    assert agreement["outcome"] == "reported"  # shown, not gated


def test_post_training_agreement_gate_still_fails_on_real_disagreement():
    labels, ref, art = _predictions(2000, 0.9, losses=60, wins=60)  # accuracy equal, 6% of calls changed
    p = _parity("tflite-int8", labels, ref, art)
    assert p.delta_pp == 0 and p.outcome == "fail" and any("top-1 agreement" in f for f in p.failures)


def test_one_sample_of_30_is_inconclusive_with_needed_n():
    """iris: a QAT artifact at 100% that differs from Keras on 1 of 30 samples is not a failure."""
    labels, ref, art = _predictions(30, 29 / 30, losses=0, wins=1, classes=3)
    p = _parity("tflite-int8-qat", labels, ref, art)
    assert not p.failures
    labels, ref, art = _predictions(30, 1.0, losses=1, wins=0, classes=3)  # post-training, one flip
    p = _parity("tflite-int8", labels, ref, art)
    assert p.outcome == "inconclusive" and not p.failures
    assert any("needs about" in m for m in p.inconclusive)
    chk = gs.disagreement_check(1, 30, 0.97, CONF)
    assert chk.outcome == gs.INCONCLUSIVE and chk.needed_n > 30


def test_needed_n_is_where_the_decision_flips():
    chk = gs.disagreement_check(0, 30, 0.97, CONF)
    assert chk.outcome == gs.INCONCLUSIVE
    # with no disagreement the upper bound is 1 - 0.05^(1/n) <= 3%  <=>  n >= ln(0.05) / ln(0.97) = 98.4
    assert chk.needed_n == pytest.approx(99, abs=1)
    assert gs.disagreement_check(0, chk.needed_n, 0.97, CONF).outcome == gs.PASS


def test_worst_class_drop_fails_a_forgotten_class():
    labels, ref, _ = _predictions(1000, 1.0, losses=0, wins=0)
    art = ref.copy()
    cls0 = np.flatnonzero(labels == 0)
    art[cls0[:40]] = 1  # class 0 loses 40 of ~100 samples: overall 4 pp, class 0 ~40 pp (gate 10 pp)
    art[np.flatnonzero(labels == 1)[:1]] = 2
    p = _parity("tflite-int8-pruned", labels, ref, art)
    assert any(f.startswith("worst per-class drop") and "class 0" in f for f in p.failures)


def test_nan_output_fails_the_gate():
    labels, ref, art = _predictions(200, 0.9, 0, 0)
    y = _onehot(art)
    y[3, 0] = np.nan
    p = _parity("tflite-fp32", labels, ref, art, y=y)
    assert p.outcome == "fail" and any("artifact outputs NaN/Inf on 1 of 200" in f for f in p.failures)


def test_inf_in_keras_reference_fails_the_gate():
    labels, ref, art = _predictions(200, 0.9, 0, 0)
    r = _onehot(ref)
    r[:, 0] = np.inf
    p = _parity("tflite-int8", labels, ref, art, refout=r)
    assert any("Keras reference outputs NaN/Inf on 200 of 200" in f for f in p.failures)


def test_float32_identity_gate_fails_on_one_flip():
    labels, ref, art = _predictions(1000, 0.9, losses=0, wins=1)
    p = _parity("onnx-fp32", labels, ref, art)
    assert any(f.startswith("top-1 agreement 99.90%") for f in p.failures)
    labels, ref, art = _predictions(1000, 0.9, losses=0, wins=0)
    assert _parity("onnx-fp32", labels, ref, art).outcome == "pass"


def test_delta_bounds_contain_estimate_and_are_one_sided_mcnemar():
    lo, hi = gs.delta_bounds(12, 4, 500, CONF)
    assert lo < 100 * (4 - 12) / 500 < hi
    # the upper bound on the delta is below 0 exactly when the one-sided exact McNemar test rejects at 5%
    for losses, wins in ((12, 4), (9, 2), (20, 10), (8, 3), (5, 5)):
        rejects = binomtest(losses, losses + wins, 0.5, alternative="greater").pvalue < 0.05
        assert (gs.delta_bounds(losses, wins, 500, CONF)[1] < 0) == rejects
