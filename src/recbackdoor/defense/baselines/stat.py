"""Statistical detector: a fragment repeated on several titles, in the same place, with a shape
that the rest of the catalog does not have.

BadRec reuses one trigger on every poisoned title, in one position (suffix by default). So the
evidence is *across* titles: a fragment ``f`` (the last/first ``k`` words, or the tail/head of
the last/first word cut at a separator such as ``_``) that

- is shared by at least ``min_count`` distinct titles (repetition), but by at most
  ``max_share`` of the catalog (default one half: BadRec's default per-sample policy at
  P_R = 1% puts its trigger on ~10% of LastFM's artists, so "rare" cannot mean a few
  percent; common words and years are kept out by the concentration test below), and
- accounts for most of the fragments of its *shape* in that position (concentration): the
  shape maps upper-case letters to ``A``, lower-case to ``a``, digits to ``9``. ``(1981)`` at
  the end of 13 movie titles is one of ~1,600 ``(9999)`` endings (concentration 0.01); ``_5v``
  at the end of 12 titles is the only ``_9a`` ending (concentration 1).

``s(f) = concentration(f) * (1 - 1/df(f))`` and a title's score is the largest ``s`` of its
fragments, in [0, 1). The default threshold 0.8 flags a title whose fragment is shared by
>= 5 titles at full concentration (more titles allow a little less); on clean catalogs only
franchise-like repeats reach it (``Jr.`` artists, ``Nancy Drew®:`` games). Limits: a trigger inserted at a
random word boundary with an ordinary shape, or a different trigger per title, leaves no such
footprint (that is where a per-title scanner must do the work); a natural edit repeated on
several titles with a unique shape (e.g. ``(Remastered)`` on 5 albums) is flagged.
``spans`` returns the fragment behind each score, for the ``strip`` sanitize policy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from ...errors import ConfigError
from .common import check_domain

DEFAULT_THRESHOLD = 0.8
_SEP = "_-~|+.:;#@*/\\"
_SHAPE = str.maketrans(
    {
        **{c: "A" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
        **{c: "a" for c in "abcdefghijklmnopqrstuvwxyz"},
        **{c: "9" for c in "0123456789"},
    }
)


def shape(text: str) -> str:
    """Character classes: ``Toy_5v`` -> ``Aaa_9a`` (non-ASCII letters: by case)."""
    out = text.translate(_SHAPE)
    return "".join("A" if c.isupper() else "a" if c.isalpha() else c for c in out)


# articles and particles that start or end many real titles ("The ...", "... of the"): a
# fragment made only of these is ordinary language, however often it repeats
_FUNCTION_WORDS = frozenset(
    "the a an of and or in on at to for with from by vs vs. feat. ft. & "
    "le la les l' el los las il lo gli der die das den ein eine de des du et y und".split()
)


def fragments(title: str, max_words: int = 8) -> Iterator[tuple[str, str]]:
    """(kind, fragment) pairs: word suffixes/prefixes of 1..max_words words and char
    tails/heads of the last/first word cut at a separator character. Fragments without a letter
    or digit (a lone ``.``) and fragments made only of function words ("The") are not evidence
    of anything and are skipped."""
    for kind, frag in _all_fragments(title, max_words):
        if any(c.isalnum() for c in frag) and not all(
            w.lower() in _FUNCTION_WORDS for w in frag.split()
        ):
            yield kind, frag


def _all_fragments(title: str, max_words: int) -> Iterator[tuple[str, str]]:
    ws = title.split()
    if not ws:
        return
    for k in range(1, min(max_words, len(ws)) + 1):
        yield "word-suffix", " ".join(ws[-k:])
        yield "word-prefix", " ".join(ws[:k])
    last, first = ws[-1], ws[0]
    for m in re.finditer(f"[{re.escape(_SEP)}]", last):
        for start in (m.start(), m.end()):
            if 0 < start < len(last):
                yield "char-suffix", last[start:]
    for m in re.finditer(f"[{re.escape(_SEP)}]", first):
        for end in (m.start(), m.end()):
            if 0 < end < len(first):
                yield "char-prefix", first[:end]


class StatDetector:
    """Repeated rare fragments across the catalog (see the module docstring)."""

    name = "stat"

    def __init__(
        self,
        threshold: float | None = None,
        min_count: int = 3,
        max_share: float = 0.5,
        max_words: int = 8,
    ) -> None:
        if min_count < 2:
            raise ConfigError(f"stat detector: min_count must be >= 2, got {min_count}")
        if not 0.0 < max_share <= 1.0:
            raise ConfigError(f"stat detector: max_share must be in (0, 1], got {max_share}")
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        self.min_count = min_count
        self.max_share = max_share
        self.max_words = max_words
        self._df: Counter[tuple[str, str]] = Counter()
        self._shape_df: Counter[tuple[str, str]] = Counter()
        self._max_df = 0
        self._fitted = False

    def fit(self, titles: Sequence[str], domain: str) -> StatDetector:
        check_domain(domain)
        self._df, self._shape_df = Counter(), Counter()
        distinct = sorted(set(titles))
        for title in distinct:
            frags = set(fragments(title, self.max_words))
            self._df.update(frags)
            self._shape_df.update({(kind, shape(f)) for kind, f in frags})
        self._max_df = max(self.min_count, int(self.max_share * len(distinct)))
        self._fitted = True
        return self

    def _fragment_score(self, kind: str, fragment: str) -> float:
        df = self._df.get((kind, fragment), 0)
        if df < self.min_count or df > self._max_df:
            return 0.0
        concentration = df / self._shape_df[(kind, shape(fragment))]
        return concentration * (1.0 - 1.0 / df)

    def _best(self, title: str) -> tuple[float, str | None]:
        if not self._fitted:
            raise ConfigError("stat detector: call fit(catalog titles) before score()")
        best, span = 0.0, None
        for kind, frag in fragments(title, self.max_words):
            s = self._fragment_score(kind, frag)
            # ties go to the longer fragment: the whole shared sentence, not its last word
            if s > best or (s == best and s > 0 and span is not None and len(frag) > len(span)):
                best, span = s, frag
        return best, span

    def score(self, titles: Sequence[str]) -> np.ndarray:
        return np.array([self._best(t)[0] for t in titles], dtype=float)

    def spans(self, titles: Sequence[str]) -> list[str | None]:
        """The fragment behind each title's score (``None`` when the score is 0)."""
        return [self._best(t)[1] for t in titles]
