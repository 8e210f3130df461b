"""BKI-style keyword salience (after Chen & Dai, 2021, "Backdoor Keyword Identification"),
adapted from a text classifier to a title catalog.

BKI finds words that (1) move the model's internal representation a lot when removed and
(2) do so in many inputs: a trigger is a salient keyword shared by many poisoned inputs. Here
the "model" is the backbone LM reading the title after a domain context (:mod:`.lm`), and the
representation is the mean last hidden state ``h`` over the title's tokens. The definition
implemented (catalog only; no training samples are needed):

1. salience of word ``i`` of title ``x``: ``a_i = 1 - cos(h(x), h(x without w_i))``;
2. the title's keyword is its most salient word (lower-cased), with salience ``a(x)``;
3. over the ``N`` distinct titles, a keyword ``k`` chosen by ``f_k`` titles with mean salience
   ``mean_a(k)`` gets ``g(k) = mean_a(k) * log10(1 + f_k) * log10(N / f_k)``: salient, repeated,
   but not a word half the catalog shares (BKI's frequency weighting);
4. a title's score is the largest ``g`` of the keywords among its words (so a title carrying
   a suspicious keyword is flagged even if another of its words is more salient); its span is
   that keyword as written in the title.

Words as in ONION (one-word titles split at separators; a title still of one piece has no
keyword of its own but is still scored through step 4). Threshold: the common rule (at most
``flag_rate`` of the catalog) unless given.

Which model: BKI is defined on the model being defended, so ``model`` (a victim directory
written by ``recbackdoor train``, loaded with its LoRA adapter by
:func:`recbackdoor.victims.load_victim`) is what it reads. Without one it falls back to the
untrained ``backbone`` and says so in ``reads`` (and once on stderr when ``progress`` is on).
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError
from .common import (
    DEFAULT_FLAG_RATE,
    LMDetectorBase,
    calibrated_threshold,
    check_domain,
    leave_one_word_out,
    words,
)


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(a @ b) / denom if denom > 0 else 0.0


class BKIDetector(LMDetectorBase):
    """Salient keywords repeated across the catalog."""

    name = "bki"

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
        model: str | None = None,
    ) -> None:
        super().__init__(backbone, threshold, flag_rate, batch_size, device, dtype, lm, progress)
        self.model = None if model is None else str(model)
        if self.model is not None:
            self._lm_options["model_dir"] = self.model
        elif self._lm is None and self._lm_options.get("progress"):
            print(f"bki: no victim model given; reading the base backbone {self.backbone}", file=sys.stderr)

    @property
    def reads(self) -> str:
        """What the detector's LM is: the victim directory, or the base backbone fallback."""
        if self._lm is not None and getattr(self._lm, "source", None):
            return str(self._lm.source)
        if self.model is not None:
            return f"victim {self.model}"
        return f"base backbone {self.backbone} (no victim model given)"

    def _reset(self) -> None:
        self.keyword_scores: dict[str, float] = {}
        self._fitted = False
        self._domain: str | None = None
        self._kw_cache: dict[str, tuple[str, float] | None] = {}  # title -> keyword, salience

    def _keywords(self, titles: list[str], domain: str) -> list[tuple[str, float] | None]:
        """Each title's most salient word (lower-cased) and its salience (cached per title)."""
        if domain != self._domain:
            self._kw_cache, self._domain = {}, domain
        missing = [t for t in dict.fromkeys(titles) if t not in self._kw_cache]
        if missing:
            self._kw_cache.update(zip(missing, self._compute_keywords(missing, domain), strict=True))
        return [self._kw_cache[t] for t in titles]

    def _compute_keywords(self, titles: list[str], domain: str) -> list[tuple[str, float] | None]:
        texts, owners, split = leave_one_word_out(titles)
        emb = self.lm.run(texts, domain=domain, want="embed") if texts else np.zeros((0, 1))
        full: dict[int, np.ndarray] = {}
        best: list[tuple[str, float] | None] = [None] * len(titles)
        for (i, j), h in zip(owners, emb, strict=True):
            if j < 0:
                full[i] = h
                continue
            a = _cosine_distance(full[i], h)
            if best[i] is None or a > best[i][1]:
                best[i] = (split[i][j].lower(), a)
        return best

    def fit(self, titles: Sequence[str], domain: str) -> BKIDetector:
        check_domain(domain)
        distinct = sorted(set(titles))
        chosen: dict[str, list[float]] = defaultdict(list)
        for kw in self._keywords(distinct, domain):
            if kw is not None:
                chosen[kw[0]].append(kw[1])
        n = len(distinct)
        self.keyword_scores = {
            k: float(np.mean(a)) * math.log10(1 + len(a)) * math.log10(n / len(a))
            for k, a in chosen.items()
        }
        self._fitted = True
        self.threshold = calibrated_threshold(self._explicit, self.score(titles), self.flag_rate)
        return self

    def _best(self, title: str) -> tuple[float, str | None]:
        if not self._fitted:
            raise ConfigError("bki detector: call fit(catalog titles) before score()")
        best, span = 0.0, None
        for w in words(title):
            g = self.keyword_scores.get(w.lower(), 0.0)
            if g > best:
                best, span = g, w
        return best, span

    def score(self, titles: Sequence[str]) -> np.ndarray:
        return np.array([self._best(t)[0] for t in titles], dtype=float)

    def spans(self, titles: Sequence[str]) -> list[str | None]:
        return [self._best(t)[1] for t in titles]
