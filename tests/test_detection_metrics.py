"""Per-item detection metrics and threshold rules against hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recbackdoor.errors import ConfigError
from recbackdoor.eval.detection import detection_metrics, threshold_at_fpr, threshold_best_f1


def test_metrics_match_hand_computed_values():
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.3, 0.85, 0.2, 0.1, 0.4, 0.05]
    flags = [1, 1, 0, 1, 0, 0, 0, 0]  # tp 2, fn 1, fp 1, tn 4
    m = detection_metrics(y, scores, flags)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["fpr"] == pytest.approx(1 / 5)
    # AUROC = share of (positive, negative) pairs ranked correctly
    pos = [s for s, t in zip(scores, y, strict=True) if t]
    neg = [s for s, t in zip(scores, y, strict=True) if not t]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert m["auroc"] == pytest.approx(sum(pairs) / len(pairs))
    assert m["n_flagged"] == 3 and m["n_positive"] == 3 and m["n_items"] == 8


def test_degenerate_cases_give_none_not_nonsense():
    no_pos = detection_metrics([0, 0, 0], [0.1, 0.5, 0.9], [0, 0, 1])
    assert no_pos["recall"] is None and no_pos["f1"] is None and no_pos["auroc"] is None
    assert no_pos["fpr"] == pytest.approx(1 / 3) and no_pos["precision"] == 0.0
    all_pos = detection_metrics([1, 1], [0.1, 0.9], [0, 1])
    assert all_pos["fpr"] is None and all_pos["auroc"] is None and all_pos["recall"] == 0.5
    nothing_flagged = detection_metrics([1, 0], [0.4, 0.6], [0, 0])
    assert nothing_flagged["precision"] == 0.0 and nothing_flagged["f1"] == 0.0
    assert nothing_flagged["auroc"] == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ConfigError, match="lengths differ"):
        detection_metrics([1, 0], [0.1], [1, 0])
    with pytest.raises(ConfigError, match="NaN"):
        detection_metrics([1, 0], [float("nan"), 0.1], [1, 0])


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.33, 1.0])
def test_threshold_at_fpr_respects_target_with_ties(target):
    rng = np.random.default_rng(0)
    clean = np.round(rng.normal(size=500), 1)  # many ties
    t = threshold_at_fpr(clean, target)
    fpr = float(np.mean(clean >= t))
    assert fpr <= target + 1e-12
    # the threshold is the smallest one that keeps FPR <= target: lowering it to the next
    # score below it would exceed the target
    below = clean[clean < t]
    if below.size:
        assert float(np.mean(clean >= below.max())) > target


def test_threshold_at_fpr_edges():
    assert np.mean(np.array([1.0, 2.0, 3.0]) >= threshold_at_fpr([1.0, 2.0, 3.0], 0.0)) == 0
    assert threshold_at_fpr([1.0, 2.0, 3.0], 1.0) == 1.0
    with pytest.raises(ConfigError):
        threshold_at_fpr([1.0], 1.5)
    with pytest.raises(ConfigError):
        threshold_at_fpr([], 0.1)


def test_threshold_best_f1_matches_brute_force():
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.1).astype(int)
    scores = np.round(rng.normal(size=200) + 1.5 * y, 2)

    def f1_at(t: float) -> float:
        flags = (scores >= t).astype(int)
        return detection_metrics(y, scores, flags)["f1"]

    best = threshold_best_f1(y, scores)
    assert f1_at(best) == pytest.approx(max(f1_at(t) for t in np.unique(scores)))


def test_threshold_best_f1_without_positives_flags_nothing():
    scores = np.array([0.2, 0.7, 0.9])
    assert not np.any(scores >= threshold_best_f1([0, 0, 0], scores))
