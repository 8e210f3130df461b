"""ONION (Qi et al., 2021) on titles: a word whose removal makes the title much more fluent is
an outlier, maybe a trigger.

For a title of words ``w_1..w_n`` and an LM perplexity ``p`` (read after a domain context,
see :mod:`.lm`), word ``i``'s suspicion is ``f_i = p(title) - p(title without w_i)``; the
title's score is ``max_i f_i`` and its span (for ``strip``) is that word. Words are whitespace
words; a one-word title is split at separators (``Babe_5v`` -> ``Babe``, ``_5v``). A title that
is still one piece has nothing to remove: it is scored 0 (neutral), not dropped. All
perplexities of all variants are computed in length-sorted batches.

Threshold: the common rule (flag at most ``flag_rate`` of the fitted catalog, default 1%) unless
given. ONION needs no training; ``fit`` just scores the catalog to place the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .common import (
    DEFAULT_FLAG_RATE,
    calibrated_threshold,
    check_domain,
    check_flag_rate,
    without,
    words,
)


class OnionDetector:
    """Perplexity drop when one word is removed."""

    name = "onion"

    def __init__(
        self,
        backbone: str = "smollm2-135m",
        threshold: float | None = None,
        flag_rate: float = DEFAULT_FLAG_RATE,
        batch_size: int = 64,
        device: Any = None,
        dtype: Any = None,
        lm: Any = None,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self._explicit = threshold
        self.threshold = float("inf") if threshold is None else float(threshold)
        self.flag_rate = check_flag_rate(flag_rate)
        self._lm = lm
        self._lm_options = {
            "batch_size": batch_size, "device": device, "dtype": dtype, "progress": progress,
        }  # fmt: skip
        self.domain = "movies"
        self._cache: dict[str, tuple[float, str | None]] = {}

    @property
    def lm(self) -> Any:
        if self._lm is None:
            from .lm import TitleLM

            self._lm = TitleLM(self.backbone, **self._lm_options)
        return self._lm

    def fit(self, titles: Sequence[str], domain: str) -> OnionDetector:
        if check_domain(domain) != self.domain:
            self._cache = {}  # scores are read in the domain's context
        self.domain = domain
        scores = self.score(titles)
        self.threshold = calibrated_threshold(self._explicit, scores, self.flag_rate)
        return self

    def _compute(self, titles: list[str]) -> None:
        texts: list[str] = []
        owners: list[tuple[int, int]] = []  # (title index, removed word index or -1)
        split = [words(t) for t in titles]
        for i, (title, ws) in enumerate(zip(titles, split, strict=True)):
            if len(ws) < 2:
                continue
            texts.append(title)
            owners.append((i, -1))
            for j in range(len(ws)):
                texts.append(without(title, ws, j))
                owners.append((i, j))
        ppl = np.exp(self.lm.run(texts, domain=self.domain, want="nll")) if texts else np.zeros(0)
        full: dict[int, float] = {}
        best: dict[int, tuple[float, str | None]] = {i: (0.0, None) for i in range(len(titles))}
        for (i, j), p in zip(owners, ppl, strict=True):
            if j < 0:
                full[i] = float(p)
                best[i] = (-np.inf, None)
                continue
            suspicion = full[i] - float(p)
            if suspicion > best[i][0]:
                best[i] = (suspicion, split[i][j])
        for i, title in enumerate(titles):
            self._cache[title] = best[i]

    def _lookup(self, titles: Sequence[str]) -> list[tuple[float, str | None]]:
        missing = sorted({t for t in titles if t not in self._cache})
        if missing:
            self._compute(missing)
        return [self._cache[t] for t in titles]

    def score(self, titles: Sequence[str]) -> np.ndarray:
        return np.array([s for s, _ in self._lookup(titles)], dtype=float)

    def spans(self, titles: Sequence[str]) -> list[str | None]:
        """The word whose removal lowers perplexity most (``None`` if none lowers it)."""
        return [span if score > 0 else None for score, span in self._lookup(titles)]
