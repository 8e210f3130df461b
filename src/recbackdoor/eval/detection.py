"""Per-item detection metrics and threshold rules (docs/design.md §5).

A detector gives one score per title (higher = more suspicious) and a 0/1 flag. Metrics follow
scikit-learn; degenerate inputs (one class only) give ``None`` for the metrics that need both
classes instead of a warning and a misleading number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name}: contains NaN or infinite values")
    return arr


def detection_metrics(
    y_true: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    flags: Sequence[int] | np.ndarray,
) -> dict[str, float | int | None]:
    """Precision, recall, F1, accuracy, AUROC, FPR (+ counts) of per-item flags against truth.

    ``y_true`` 1 = poisoned. Precision is 0 when nothing is flagged, recall ``None`` when there
    are no positives, FPR ``None`` when there are no negatives, AUROC ``None`` with one class.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

    y = np.asarray(y_true, dtype=int).ravel()
    s = _as_array(scores, "scores")
    f = np.asarray(flags, dtype=int).ravel()
    if not (len(y) == len(s) == len(f)):
        raise ConfigError(f"detection_metrics: lengths differ (y_true {len(y)}, scores {len(s)}, flags {len(f)})")
    if len(y) == 0:
        raise ConfigError("detection_metrics: no items to evaluate")
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, f, labels=[0, 1]).ravel())
    n_pos, n_neg = tp + fn, tn + fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else None
    if recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = n_pos > 0 and n_neg > 0
    return {
        "precision": float(precision),
        "recall": None if recall is None else float(recall),
        "f1": None if f1 is None else float(f1),
        "accuracy": float(accuracy_score(y, f)),
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "fpr": fp / n_neg if n_neg else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n_items": int(len(y)),
        "n_positive": n_pos,
        "n_flagged": tp + fp,
    }


def threshold_at_fpr(clean_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """Smallest threshold whose false-positive rate on ``clean_scores`` is at most ``fpr``.

    A title is flagged when ``score >= threshold``. Ties are respected: if the cut would fall
    inside a run of equal scores, the threshold moves above the whole run, so the FPR on these
    scores never exceeds the target (it may be lower).
    """
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"threshold_at_fpr: fpr must be in [0, 1], got {fpr}")
    s = np.sort(_as_array(clean_scores, "clean_scores"))[::-1]  # descending
    if len(s) == 0:
        raise ConfigError("threshold_at_fpr: no clean scores to calibrate on")
    k = int(np.floor(fpr * len(s) + 1e-9))  # the most clean titles we may flag
    if k >= len(s):
        return float(s[-1])
    # flag the top k: threshold strictly above s[k] (the (k+1)-th highest)
    return float(np.nextafter(s[k], np.inf))


def threshold_best_f1(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """The threshold (one of the scores) that maximises F1 of ``score >= threshold``.

    Ties on F1 go to the highest threshold (fewest flags). Without positives, returns a value
    above every score (flag nothing).
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true, dtype=int).ravel()
    s = _as_array(scores, "scores")
    if len(y) != len(s) or len(y) == 0:
        raise ConfigError(f"threshold_best_f1: need equal, non-empty inputs (y_true {len(y)}, scores {len(s)})")
    if y.sum() == 0:
        return float(np.nextafter(s.max(), np.inf))
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 == f1.max())
    return float(thresholds[best[-1]])  # thresholds ascend: last = highest
