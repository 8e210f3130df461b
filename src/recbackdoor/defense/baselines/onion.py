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

import numpy as np

from .common import LMDetectorBase, calibrated_threshold, check_domain, leave_one_word_out


class OnionDetector(LMDetectorBase):
    """Perplexity drop when one word is removed."""

    name = "onion"

    def _reset(self) -> None:
        self.domain = "movies"
        self._cache: dict[str, tuple[float, str | None]] = {}

    def fit(self, titles: Sequence[str], domain: str) -> OnionDetector:
        if check_domain(domain) != self.domain:
            self._cache = {}  # scores are read in the domain's context
        self.domain = domain
        scores = self.score(titles)
        self.threshold = calibrated_threshold(self._explicit, scores, self.flag_rate)
        return self

    def _compute(self, titles: list[str]) -> None:
        texts, owners, split = leave_one_word_out(titles)
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
