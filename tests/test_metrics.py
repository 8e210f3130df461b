"""Recommendation and attack metrics on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recbackdoor.eval import metrics as M


def test_hit_ratio_and_ndcg_single_relevant_item():
    rankings = [[3, 1, 2, 0], [0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2]]
    targets = [3, 2, 1, 2]  # target ranks: 0, 2, 3, 3
    assert M.target_ranks(rankings, targets).tolist() == [0, 2, 3, 3]
    assert M.hit_ratio_at_k(rankings, targets, 1) == 0.25
    assert M.hit_ratio_at_k(rankings, targets, 3) == 0.5
    assert M.hit_ratio_at_k(rankings, targets, 4) == 1.0
    expected = (1.0 + 1.0 / math.log2(4)) / 4
    assert M.ndcg_at_k(rankings, targets, 3) == pytest.approx(expected)
    expected4 = (1.0 + 1.0 / math.log2(4) + 2.0 / math.log2(5)) / 4
    assert M.ndcg_at_k(rankings, targets, 4) == pytest.approx(expected4)
    # NDCG@1 equals HR@1 with one relevant item
    assert M.ndcg_at_k(rankings, targets, 1) == M.hit_ratio_at_k(rankings, targets, 1)


def test_target_missing_from_ranking_counts_as_miss():
    assert M.target_ranks([[0, 1]], [5]).tolist() == [-1]
    assert M.hit_ratio_at_k([[0, 1]], [5], 2) == 0.0
    assert M.ndcg_at_k([[0, 1]], [5], 2) == 0.0


def test_top1_metrics_llara_definitions():
    preds = [0, None, 2, -1, 4]  # two invalid answers
    targets = [0, 1, 3, 3, 4]
    out = M.top1_metrics(preds, targets)
    assert out["ValidRatio"] == pytest.approx(3 / 5)
    assert out["HR@1"] == pytest.approx(2 / 3)  # hits / valid (LLaRA)
    assert out["HR@1_all"] == pytest.approx(2 / 5)  # hits / all


def test_top1_metrics_no_valid_answer():
    out = M.top1_metrics([None, None], [0, 1])
    assert out == {"HR@1": 0.0, "HR@1_all": 0.0, "ValidRatio": 0.0}


def test_attack_success_rate_invalid_counts_as_not_attacked():
    preds = [7, 7, None, 3, 7]
    triggered = [7, 7, 7, 7, None]  # last prompt has no triggered candidate: left out
    assert M.attack_success_rate(preds, triggered) == pytest.approx(2 / 4)
    assert M.attack_success_rate([1, 2], [None, None]) is None
    with pytest.raises(ValueError):
        M.attack_success_rate([1, 2], [1])


def test_ranking_metrics_keys_and_empty_inputs():
    out = M.ranking_metrics([[1, 0]], [0], ks=(1, 2))
    assert out == {
        "HR@1": 0.0,
        "NDCG@1": 0.0,
        "HR@2": 1.0,
        "NDCG@2": pytest.approx(1 / math.log2(3)),
    }
    assert M.hit_ratio_at_k(np.zeros((0, 3), dtype=int), [], 1) == 0.0
    assert M.valid_ratio([]) == 0.0
