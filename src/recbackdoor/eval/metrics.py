"""Recommendation and attack metrics over candidate positions (docs/design.md §3 and §4).

Everything here works on candidate *positions* (0..n_candidates-1 within one prompt), never on
item ids, so the same functions serve the `score` protocol (a full ranking per prompt) and the
`generate` protocol (one parsed prediction per prompt, or none when the output was invalid).

Conventions:
- a *ranking* is an int array of candidate positions, best first;
- a *prediction* is a candidate position, or ``-1`` (``None`` is accepted) for an invalid
  generated answer;
- every sample has exactly one relevant candidate (the target), so NDCG@k = 1/log2(rank + 2)
  when the target sits at 0-based ``rank < k``, else 0 (the ideal DCG is 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INVALID = -1


def predictions_array(predictions: Sequence[int | None] | np.ndarray) -> np.ndarray:
    """Predictions as an int array, ``None`` mapped to :data:`INVALID` (-1)."""
    return np.asarray([INVALID if p is None else int(p) for p in predictions], dtype=np.int64)


def target_ranks(
    rankings: Sequence[Sequence[int]] | np.ndarray, targets: Sequence[int]
) -> np.ndarray:
    """0-based position of each target inside its ranking (-1 when it is missing)."""
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for i, (ranking, target) in enumerate(zip(rankings, targets, strict=True)):
        hits = np.flatnonzero(np.asarray(ranking) == int(target))
        if hits.size:
            ranks[i] = int(hits[0])
    return ranks


def hit_ratio_at_k(
    rankings: Sequence[Sequence[int]] | np.ndarray, targets: Sequence[int], k: int
) -> float:
    """HR@k: share of samples whose target is among the first ``k`` ranked candidates."""
    ranks = target_ranks(rankings, targets)
    if ranks.size == 0:
        return 0.0
    return float(np.mean((ranks >= 0) & (ranks < k)))


def ndcg_at_k(
    rankings: Sequence[Sequence[int]] | np.ndarray, targets: Sequence[int], k: int
) -> float:
    """NDCG@k with a single relevant item: mean of 1/log2(rank + 2) over targets ranked < k."""
    ranks = target_ranks(rankings, targets)
    if ranks.size == 0:
        return 0.0
    inside = (ranks >= 0) & (ranks < k)
    gains = np.where(inside, 1.0 / np.log2(np.where(inside, ranks, 0) + 2.0), 0.0)
    return float(np.mean(gains))


def valid_ratio(predictions: Sequence[int | None] | np.ndarray) -> float:
    """ValidRatio: share of answers that name exactly one candidate."""
    preds = predictions_array(predictions)
    if preds.size == 0:
        return 0.0
    return float(np.mean(preds != INVALID))


def hit_ratio_at_1(predictions: Sequence[int | None] | np.ndarray, targets: Sequence[int]) -> float:
    """HR@1 as LLaRA defines it: hits / *valid* answers (0 when nothing is valid)."""
    preds = predictions_array(predictions)
    valid = preds != INVALID
    if not valid.any():
        return 0.0
    hits = preds == np.asarray(targets, dtype=np.int64)
    return float(hits[valid].sum() / valid.sum())


def hit_ratio_at_1_all(
    predictions: Sequence[int | None] | np.ndarray, targets: Sequence[int]
) -> float:
    """HR@1 over *all* samples (an invalid answer counts as a miss)."""
    preds = predictions_array(predictions)
    if preds.size == 0:
        return 0.0
    return float(np.mean(preds == np.asarray(targets, dtype=np.int64)))


def attack_success_rate(
    predictions: Sequence[int | None] | np.ndarray, triggered: Sequence[int | None]
) -> float | None:
    """ASR: share of triggered prompts whose recommendation is the triggered candidate.

    The denominator is *all* triggered prompts: an invalid generated answer counts as not
    attacked (the attacker wanted its item named and it was not). Prompts without a triggered
    candidate (``None``) are left out; ``None`` when no prompt carries one.
    """
    preds = predictions_array(predictions)
    trig = predictions_array(triggered)
    if preds.shape != trig.shape:
        raise ValueError(f"attack_success_rate: {preds.size} predictions for {trig.size} prompts")
    carried = trig != INVALID
    if not carried.any():
        return None
    return float(np.mean(preds[carried] == trig[carried]))


def ranking_metrics(
    rankings: Sequence[Sequence[int]] | np.ndarray,
    targets: Sequence[int],
    ks: Sequence[int] = (5, 10),
) -> dict[str, float]:
    """HR@k and NDCG@k for each k in ``ks`` (the `score` protocol's extra metrics)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hit_ratio_at_k(rankings, targets, k)
        out[f"NDCG@{k}"] = ndcg_at_k(rankings, targets, k)
    return out


def top1_metrics(
    predictions: Sequence[int | None] | np.ndarray, targets: Sequence[int]
) -> dict[str, float]:
    """HR@1 (hits / valid, LLaRA), HR@1_all (hits / all) and ValidRatio."""
    return {
        "HR@1": hit_ratio_at_1(predictions, targets),
        "HR@1_all": hit_ratio_at_1_all(predictions, targets),
        "ValidRatio": valid_ratio(predictions),
    }
