"""The detector interface shared by P-Scanner and the baselines.

A detector sees only titles (and the domain), never the attacker's trigger or targets. It
scores each title; higher means more likely poisoned. ``threshold`` turns scores into flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """Scores titles for injected triggers. ``fit`` may look at the whole (possibly poisoned)
    catalog: catalog-level statistics are legitimate evidence for a defender."""

    name: str
    threshold: float

    def fit(self, titles: Sequence[str], domain: str) -> Detector:
        """Learn whatever the detector needs from the catalog; returns self."""
        ...

    def score(self, titles: Sequence[str]) -> np.ndarray:
        """One float per title, higher = more suspicious."""
        ...


def flag(detector: Detector, titles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 flags (score >= threshold) for ``titles``."""
    scores = np.asarray(detector.score(titles), dtype=float)
    return scores, (scores >= detector.threshold).astype(int)
