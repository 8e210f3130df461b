"""Evidence across titles (docs/design.md §5): BadRec reuses one trigger, so the poisoned titles share a
fragment, and the scanner scores them high together. A fragment's *group score* asks how
unlikely that is by chance: of the ``n`` catalog titles that contain it, ``k`` are among the
catalog's most suspicious (per-title scores in its top ``c``, a share ``p0`` of the catalog),
and the score is the significance ``-log10 P(Binomial(n, p0) >= k)``, best over a few cuts
``c`` (1% ... 40%), minus ``log10`` of the number of fragments and cuts tried (a Bonferroni
correction, so a catalog of 5,000 titles and ~20,000 fragments does not find "significant"
coincidences that a 300-title validation catalog never shows).

The correction is *weighted* (Bonferroni with an alpha split fixed in advance): the few
*shape* fragments (``s^ s$ sw^ sw$``, below; a handful per catalog) share ``SHAPE_ALPHA`` of
the error budget, the thousands of text fragments the rest. A trigger family that varies its
text shows up only as a shape, and its titles, scored only somewhat high by a weak per-title
channel, fall short when a shape pays for all the word n-grams too; text fragments pay
``log10 2`` more (measured: docs/results/detect-bench-steam.md).

Why a significance and not the mean score of the group: a mean shrunk towards the catalog
needs a pseudo-count, and no pseudo-count fits both a 300-title validation catalog and a
4,600-title scan (BadRec's ``fixed`` policy, a few targets in a large catalog, goes
undetected that way). Ten titles all in the top 5% happen by chance with probability
0.05^10 = 1e-13, far beyond what a handful of odd clean titles sharing a word reaches after
the correction. The score reads the same at any catalog size and prevalence: 10 targets or
20% of the catalog.

The chance rate of a fragment can come from a *clean reference*: titles the scanner never
trained on, known clean, with its scores (``reference``; a trained scanner keeps its held-out
validation titles). A fragment's rate at a cut is then how often the reference titles that
hold it reach that cut, shrunk towards the catalog's rate by ``REFERENCE_PRIOR`` pseudo-titles,
and never below the catalog's rate: the reference explains evidence away, it never adds any
(a word that the scanner scores low on clean titles, such as the "I" of "I.Q.", would
otherwise make the "i" group outrank the reused sentence "I watched this 3D movie" that it
contains, and flag clean movies). So a scanner's own bias is not evidence: after adversarial
rounds a scanner may score most titles with "The" high, and the "the" group must not outrank
the real targets. A trigger is in no clean reference title, so its rate stays the catalog's.

Groups explain titles greedily: the most significant group claims its titles, and every other
group is re-scored on the titles still unclaimed (a repeated text significant enough to flag
goes before any shape: it is the more specific explanation). So a clean "Rock On" does not
inherit the score of the reused sentence "... I listened to this on vinyl" through "on": those
titles were already claimed by the sentence. A group claims only those of its titles that
the scanner does not find clearly clean (per-title score in the catalog's top ``CLAIM_SHARE``),
so a clean title that merely shares a common word with the poison keeps its own verdict. A
title's evidence is the score of the group that claimed it (0 if no group is significant).

Fragments: lower-cased word 1-3-grams (words split on spaces and on the glue characters
``_ - .``), the first and last 2-4 characters of the title (a glued char trigger), except
numbers (``_number``: an n-gram of numbers only, the end of a title that ends in a number), the
*shape* of its first and last 3-4 characters when they hold a glue character ``_ ~ |``
(``A`` upper, ``a`` lower, ``9`` digit, others kept: ``..._5v`` and ``..._3k`` both end in
``_9a``), so a char trigger family that varies the text but keeps one form (``attack
--trigger-family char``) still forms one group.
"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln, logsumexp

from .robust import shape

_WORD_SPLIT = re.compile(r"[\s_\-.]+")
_EDGE = "()[]{}\"'.,:;!?"
_GLUE = "_-.~| "
# shapes only of ends holding a glue character no clean title uses much: the shapes of
# ordinary ends ("Maroon 5": "a 9", "dredg": "aaa") group odd-looking clean names
_SHAPE_GLUE = "_~|"
# a group claims only its members among the catalog's top 40% by per-title score: a clean
# "This Mortal Coil" that shares "this" with reused sentences, scored as clean as most of the
# catalog, stays out. A tighter claim missed prefix-triggered titles the scanner ranked below
# its top 10% (docs/user-guide/defense.md)
CLAIM_SHARE = 0.4
WORD_SHAPE_MAX = 4  # longest first / last word whose shape is a fragment (see _odd_short_word)
MODES = ("off", "max")
COMBINED_THRESHOLD = 0.5  # the cut of the combined score (see ``combine``)
CHANNEL_OFF = 2.0  # a per-title threshold no score in [0, 1] reaches
GROUP_OFF = 1e9  # a group threshold no significance reaches (finite: thresholds go to JSON)
# the lowest group threshold calibration may choose (log10 units: under independence chance
# would produce such a group once in 100,000 catalogs). A 300-title validation catalog has no
# coincidental groups, so its best-F1 cut can fall near 0; real catalogs have some, because
# the scanner's suspicion follows content (odd clean names sharing a digit); the README's
# P-Scanner section has the measured scores of such groups and of real trigger groups
MIN_GROUP_SCORE = 5.0
REFERENCE_PRIOR = 10.0  # pseudo-titles at the catalog's rate added to a fragment's reference count
SHAPE_KINDS = ("s^", "s$", "sw^", "sw$")  # fragments that name a shape, not text
SHAPE_ALPHA = 0.5  # the share of the error budget the shape fragments get (module docstring)


def fragments(title: str, max_n: int = 3) -> set[str]:
    """The fragments a trigger could share across titles (see module docstring)."""
    stripped = title.strip()
    low = stripped.lower()
    words = [w.strip(_EDGE) for w in _WORD_SPLIT.split(low)]
    words = [w for w in words if w]
    out: set[str] = set()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            if not all(_number(w) for w in words[i : i + n]):
                out.add("w:" + " ".join(words[i : i + n]))
    spaced = stripped.split()
    for k in (2, 3, 4):
        if len(low) > k + 1:
            if not _number(spaced[0]):
                out.add("^" + low[:k])
            if not _number(spaced[-1]):
                out.add(low[-k:] + "$")
    for k in (3, 4):  # the shape of a glued end: a char trigger family shares it, not its text
        if len(stripped) > k + 1:
            for kind, end in (("s^", stripped[:k]), ("s$", stripped[-k:])):
                if any(c in _SHAPE_GLUE for c in end):
                    out.add(kind + shape(end))
    if len(spaced) > 1:  # the shape of a short lower-case first / last word: a word trigger family
        for kind, word in (("sw^", spaced[0]), ("sw$", spaced[-1])):
            if _odd_short_word(word):
                out.add(kind + shape(word))
    return out


def fragment_index(titles: Sequence[str]) -> dict[str, list[int]]:
    """Every fragment of ``titles`` -> the positions of the titles that hold it."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(titles):
        for f in fragments(str(t)):
            index[f].append(i)
    return dict(index)


def _number(word: str) -> bool:
    """A sequel number, year or edition ("2", "(1995)", "#3"). Numbers are the commonest
    content titles share ("Arma 2", "Anomaly 2"), and a scanner's suspicion follows digits, so
    a sequel-number group can outrank the trigger. So words that are numbers, and the ends of titles that end in one, are no fragments; a
    trigger of digits alone is left to the per-title channel."""
    return word.strip(_EDGE + "#").isdigit()


def _odd_short_word(word: str) -> bool:
    """A first or last word of 1-4 characters with a lower-case letter and no upper-case one
    (``tq``, ``x9``): titles capitalise their words, so a family of such tokens at one end
    stands out by shape. Digit-only words (sequel numbers, "Sum 41") and capitalised ones
    are left out: clean titles share those shapes, and the scanner's suspicion follows them."""
    return (
        len(word) <= WORD_SHAPE_MAX
        and any(c.islower() for c in word)
        and not any(c.isupper() for c in word)
    )


TAIL_SHARES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # "suspicious" = the catalog's top 1% ... 40%


class _BinomialTail:
    """``-log10 P(Binomial(n, p) >= k)`` for one catalog, exact in log space (no underflow at
    k = n = 1,000), with the log-factorials computed once."""

    def __init__(self, n_max: int) -> None:
        self.log_fact = gammaln(np.arange(n_max + 2, dtype=float) + 1.0)  # log k!

    def neg_log10(self, k: int, n: int, p: float) -> float:
        if k <= 0:
            return 0.0
        j = np.arange(k, n + 1)
        lf = self.log_fact
        log_pmf = lf[n] - lf[j] - lf[n - j] + j * np.log(p) + (n - j) * np.log1p(-p)
        return float(-logsumexp(log_pmf) / np.log(10))


class CatalogEvidence:
    """Greedy group evidence of one catalog (see module docstring). A fragment is tested when
    it occurs in at least ``min_count`` titles and at most ``max_share`` of them (default: no
    cap; BadRec's per-sample policy puts one trigger on 10-20% of a catalog, and a cap of 10%
    threw exactly that fragment away). "Suspicious" is tried at several cuts: the titles at or
    above the catalog's ``1 - c`` score quantile for each ``c`` in ``tail_shares`` (their actual
    share, ties included, is the chance rate of that cut), so 10 titles at the very top and a
    fifth of the catalog somewhat above the rest are both found. A group's score is its best
    significance over the cuts in log10 units, corrected for the fragments and cuts tried
    (shape fragments share ``shape_alpha`` of the budget); only groups scoring above 0 (fewer
    than one expected by chance) are kept. A group claims its members in the catalog's top
    ``claim_share`` by score (None: every member). ``reference``: clean
    titles and their scores by the same scanner, the chance rate of the fragments they hold
    (module docstring)."""

    def __init__(
        self,
        titles: Sequence[str],
        scores: Sequence[float] | np.ndarray,
        min_count: int = 3,
        max_share: float = 1.0,
        tail_shares: Sequence[float] = TAIL_SHARES,
        claim_share: float | None = CLAIM_SHARE,
        shape_alpha: float = SHAPE_ALPHA,
        reference: tuple[Sequence[str], Sequence[float] | np.ndarray] | None = None,
    ) -> None:
        own = np.asarray(scores, dtype=float)
        if not 0.0 < shape_alpha < 1.0:
            raise ValueError(f"shape_alpha must be in (0, 1), got {shape_alpha}")
        if len(own) != len(titles):
            raise ValueError("one score per title is needed")
        if not tail_shares or not all(0.0 < c < 1.0 for c in tail_shares):
            raise ValueError(f"tail shares must be in (0, 1), got {list(tail_shares)}")
        self.titles = [str(t) for t in titles]
        self.index = {t: i for i, t in reversed(list(enumerate(self.titles)))}
        cap = max(min_count, int(max_share * len(titles)))
        tested = {f: np.asarray(idx) for f, idx in fragment_index(self.titles).items() if min_count <= len(idx) <= cap}
        n_all = max(len(own), 1)
        # one 0/1 row per cut; the chance rate of each kept off 0 and 1 so every tail is finite
        cuts = [float(np.quantile(own, 1.0 - c)) for c in tail_shares] if len(own) else []
        hot = np.array([own >= cut for cut in cuts], dtype=bool).reshape(len(cuts), len(own))
        rates = np.clip(hot.mean(axis=1) if len(own) else np.zeros(0), 1.0 / (n_all + 1), n_all / (n_all + 1))
        n_shape = sum(1 for f in tested if f.startswith(SHAPE_KINDS))
        self.correction = {  # weighted Bonferroni: log10(tests in the class / its alpha share)
            True: float(np.log10(max(n_shape, 1) * len(tail_shares) / shape_alpha)),
            False: float(np.log10(max(len(tested) - n_shape, 1) * len(tail_shares) / (1.0 - shape_alpha))),
        }
        tail = _BinomialTail(len(own))
        null_rate = self._reference_rates(reference, cuts, rates, n_all)

        def value(f: str, idx: np.ndarray) -> float:
            ks, n = hot[:, idx].sum(axis=1), len(idx)
            p_f = null_rate(f)
            best = max((tail.neg_log10(int(k), n, float(p)) for k, p in zip(ks, p_f, strict=True) if k > n * p), default=0.0)
            return best - self.correction[f.startswith(SHAPE_KINDS)]

        def key(f: str, v: float) -> tuple[int, float, int, str]:
            """Greedy order: a repeated text significant enough to flag (``MIN_GROUP_SCORE``)
            explains its titles before any shape does (fixed ``cf`` on LastFM: the shape
            ``sw$aa`` also holds the clean "Rie fu"); then by significance."""
            return (0 if v >= MIN_GROUP_SCORE and not f.startswith(SHAPE_KINDS) else 1, -v, -len(f), f)

        self.members: dict[str, tuple[int, ...]] = {}
        heap: list[tuple[int, float, int, str]] = []
        for f, idx in tested.items():
            v = value(f, idx)
            if v > 0:
                self.members[f] = tuple(idx.tolist())
                heap.append(key(f, v))
        heapq.heapify(heap)
        floor = float(np.quantile(own, 1.0 - claim_share)) if claim_share and len(own) else -np.inf
        claimed = np.zeros(len(own), dtype=bool)
        self.claim = np.full(len(own), -1, dtype=int)  # index into self.picks
        self.picks: list[tuple[str, float, int]] = []  # fragment, group score, titles claimed
        while heap:  # lazy greedy: re-score the top on unclaimed titles; accept if still best
            f = heapq.heappop(heap)[-1]
            idx = np.asarray(self.members[f])
            rest = idx[~claimed[idx]]
            if len(rest) < min_count:
                continue
            v = value(f, rest)
            if v <= 0:
                continue
            if heap and key(f, v) > heap[0]:
                heapq.heappush(heap, key(f, v))
                continue
            take = rest[own[rest] >= floor]
            self.claim[take] = len(self.picks)
            claimed[take] = True
            self.picks.append((f, v, len(take)))
        self.group = {f: v for f, v, _ in self.picks}

    @staticmethod
    def _reference_rates(reference, cuts: list[float], rates: np.ndarray, n_all: int):
        """``f -> chance rate per cut``: the catalog's, or the clean reference titles holding
        ``f`` that reach each cut (the catalog's cut values), shrunk towards it, if higher."""
        if reference is None:
            return lambda f: rates
        ref_titles, ref_scores = reference
        ref_scores = np.asarray(ref_scores, dtype=float)
        if len(ref_scores) != len(ref_titles):
            raise ValueError("one reference score per reference title is needed")
        ref_members = fragment_index(ref_titles)
        ref_hot = np.array([ref_scores >= cut for cut in cuts], dtype=bool).reshape(len(cuts), len(ref_scores))
        lo, hi = 1.0 / (n_all + 1), n_all / (n_all + 1)

        def rate(f: str) -> np.ndarray:
            idx = ref_members.get(f)
            if not idx:
                return rates
            k = ref_hot[:, idx].sum(axis=1)
            shrunk = (k + REFERENCE_PRIOR * rates) / (len(idx) + REFERENCE_PRIOR)
            return np.clip(np.maximum(shrunk, rates), lo, hi)  # explains evidence away, never adds any

        return rate

    def evidence(self, titles: Sequence[str]) -> np.ndarray:
        """Group score (significance, log10 units) of the group that claimed each title, 0 if
        none. A title outside the fitted catalog gets the best picked group among its
        fragments."""
        out = np.zeros(len(titles))
        for k, t in enumerate(titles):
            i = self.index.get(str(t))
            if i is not None:
                out[k] = self.picks[self.claim[i]][1] if self.claim[i] >= 0 else 0.0
            else:
                out[k] = max((self.group.get(f, 0.0) for f in fragments(str(t))), default=0.0)
        return out

    def top_fragment(self, title: str) -> tuple[str, float]:
        """The fragment of the group behind a title's evidence, or ("", 0)."""
        i = self.index.get(str(title))
        if i is not None:
            return (self.picks[self.claim[i]][0], self.picks[self.claim[i]][1]) if self.claim[i] >= 0 else ("", 0.0)
        best = max(((v, len(f), f) for f in fragments(title) if (v := self.group.get(f)) is not None), default=(0.0, 0, ""))
        return best[2], best[0]

    def span(self, title: str) -> str:
        """The text of ``title`` behind its evidence, as it appears there: the union of the
        fragments shared by exactly the same titles as the claiming one (a whole reused
        sentence, not just 3 of its words), glue included for a char trigger; "" if none."""
        top, _ = self.top_fragment(title)
        if not top:
            return ""
        same = [f for f in fragments(title) if self.members.get(f) == self.members[top]]
        words = [m for m in (_locate(title, f) for f in same if f.startswith("w:")) if m is not None]
        edges = sorted((m for m in (_locate(title, f) for f in same if not f.startswith("w:")) if m is not None), key=lambda m: m[1] - m[0])
        if not words:
            return title[edges[0][0] : edges[0][1]].strip() if edges else ""
        start, end = min(a for a, _ in words), max(b for _, b in words)
        # an edge fragment adds only the glue of a char trigger ("_5v"), never title text
        # that all the poisoned titles happen to share (the ")" of "(1995)_5v")
        for a, b in edges:
            if a <= start and b >= end and all(c in _GLUE for c in title[a:start] + title[end:b]):
                start, end = a, b
        return title[start:end].strip()

def _locate(title: str, fragment: str) -> tuple[int, int] | None:
    """Where a fragment occurs in ``title`` (case-insensitive), as (start, end)."""
    if fragment.startswith("w:"):
        words = fragment[2:].split(" ")
        pattern = r"[\s_\-.]*".join(re.escape(w) for w in words)
        m = re.search(r"(?<![0-9a-z])" + pattern + r"(?![0-9a-z])", title.lower())
        return (m.start(), m.end()) if m else None
    low = title.lower().strip()
    offset = len(title) - len(title.lstrip())
    if fragment.startswith(("sw^", "sw$")):  # a word shape: the first / last word itself
        words = list(re.finditer(r"\S+", title))
        m = words[0] if fragment[2] == "^" else words[-1]
        return (m.start(), m.end())
    if fragment.startswith(("s^", "s$")):  # a shape: the title's own characters there
        k = len(fragment) - 2
        return (offset, offset + k) if fragment[1] == "^" else (offset + len(low) - k, offset + len(low))
    if fragment.startswith("^"):
        return (offset, offset + len(fragment) - 1)
    if fragment.endswith("$"):
        end = offset + len(low)
        return (end - (len(fragment) - 1), end)
    return None


def combine(own: np.ndarray, evidence: np.ndarray, mode: str, t_own: float = 0.5, t_group: float = 0.5) -> np.ndarray:
    """Per-title score with cross-title evidence. ``max``: a title is flagged when its own
    score reaches ``t_own`` *or* its group evidence reaches ``t_group`` (two calibrated
    thresholds: the per-title channel must be strict, since odd clean titles exist, while a
    suspicious group is strong evidence); as one score, ``½ max(own / t_own, group / t_group)``
    clipped to [0, 1], flagged at ``COMBINED_THRESHOLD`` = ½. ``off`` ignores the evidence."""
    own = np.asarray(own, dtype=float)
    if mode == "off":
        return own
    if mode == "max":
        if t_own <= 0 or t_group <= 0:
            raise ValueError("evidence thresholds must be positive")
        both = np.maximum(own / t_own, np.asarray(evidence, dtype=float) / t_group)
        return np.clip(0.5 * both, 0.0, 1.0)
    raise ValueError(f"unknown evidence mode {mode!r}; use one of {', '.join(MODES)}")
