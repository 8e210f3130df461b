"""Evidence across titles (DESIGN 5): BadRec reuses one trigger, so the poisoned titles share a
fragment. A fragment's *group score* is the mean per-title scanner score of the catalog titles
that contain it, shrunk towards the catalog mean (pseudo-titles in proportion to the catalog),
so a group of 40 moderately suspicious titles outweighs three odd ones. Averaging turns many uncertain verdicts
into a confident one, while a common fragment ("the", "love") averages over clean titles.

Groups explain titles greedily: the best-scoring group claims its titles, and every other
group is re-scored on the titles still unclaimed. So a clean "Rock On" does not inherit the
score of the reused sentence "... I listened to this on vinyl" through the word "on": those
titles were already claimed by the sentence. A title's evidence is the score of the group
that claimed it, as its excess over the catalog's mean score (0 if no group scored above the
catalog's ``floor_quantile``): an excess, so one threshold fits catalogs whose titles look
more or less odd overall.

Fragments: lower-cased word 1-3-grams (words split on spaces and on the glue characters
``_ - .``) plus the first and last 2-4 characters of the title (a glued char trigger).
"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

_WORD_SPLIT = re.compile(r"[\s_\-.]+")
_EDGE = "()[]{}\"'.,:;!?"
_GLUE = "_-.~| "
MODES = ("off", "max")
COMBINED_THRESHOLD = 0.5  # the cut of the combined score (see ``combine``)
CHANNEL_OFF = 2.0  # a channel threshold no score in [0, 1] reaches


def fragments(title: str, max_n: int = 3) -> set[str]:
    """The fragments a trigger could share across titles (see module docstring)."""
    low = title.lower().strip()
    words = [w.strip(_EDGE) for w in _WORD_SPLIT.split(low)]
    words = [w for w in words if w]
    out: set[str] = set()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            out.add("w:" + " ".join(words[i : i + n]))
    for k in (2, 3, 4):
        if len(low) > k + 1:
            out.add("^" + low[:k])
            out.add(low[-k:] + "$")
    return out


class CatalogEvidence:
    """Greedy group evidence of one catalog (see module docstring). A fragment counts when it
    occurs in at least ``min_count`` titles and at most ``max_share`` of them (default: no
    cap; BadRec's per-sample policy puts one trigger on 10-20% of a catalog, and a cap of 10%
    threw exactly that fragment away; common clean fragments such as "the" or "(1995)"
    average over clean titles and are claimed after the trigger's group, so they stay low). Group scores
    are shrunk with ``shrink_share * len(titles)`` pseudo-titles (or ``shrink`` of them)."""

    def __init__(
        self,
        titles: Sequence[str],
        scores: Sequence[float] | np.ndarray,
        min_count: int = 3,
        max_share: float = 1.0,
        shrink_share: float = 0.005,
        floor_quantile: float = 0.75,
        shrink: float | None = None,
    ) -> None:
        own = np.asarray(scores, dtype=float)
        if len(own) != len(titles):
            raise ValueError("one score per title is needed")
        self.titles = [str(t) for t in titles]
        self.index = {t: i for i, t in reversed(list(enumerate(self.titles)))}
        members: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.titles):
            for f in fragments(t):
                members[f].append(i)
        cap = max(min_count, int(max_share * len(titles)))
        prior = float(own.mean()) if len(own) else 0.0
        # pseudo-titles at the catalog mean, in proportion to the catalog: a group holding a
        # given share of the catalog is weighted alike in a 500-title validation catalog and
        # a 5,000-title scan, while a handful of odd titles counts for less in a big catalog
        shrink = max(1.0, shrink_share * len(own)) if shrink is None else float(shrink)
        floor = float(np.quantile(own, floor_quantile)) if len(own) else 1.0

        def value(idx: np.ndarray) -> float:
            return float((own[idx].sum() + shrink * prior) / (len(idx) + shrink))

        self.members: dict[str, tuple[int, ...]] = {}
        heap: list[tuple[float, int, str]] = []
        for f, idx in members.items():
            if min_count <= len(idx) <= cap:
                v = value(np.asarray(idx))
                if v >= floor:
                    self.members[f] = tuple(idx)
                    heap.append((-v, -len(f), f))
        heapq.heapify(heap)
        claimed = np.zeros(len(own), dtype=bool)
        self.claim = np.full(len(own), -1, dtype=int)  # index into self.picks
        self.picks: list[tuple[str, float, int]] = []  # fragment, group score, titles claimed
        while heap:  # lazy greedy: re-score the top on unclaimed titles; accept if still best
            neg_v, neg_len, f = heapq.heappop(heap)
            idx = np.asarray(self.members[f])
            rest = idx[~claimed[idx]]
            if len(rest) < min_count:
                continue
            v = value(rest)
            if v < floor:
                continue
            if heap and (-v, neg_len, f) > heap[0]:
                heapq.heappush(heap, (-v, neg_len, f))
                continue
            self.claim[rest] = len(self.picks)
            claimed[rest] = True
            self.picks.append((f, v - prior, len(rest)))  # excess over the catalog mean
        self.prior = prior
        self.group = {f: v for f, v, _ in self.picks}

    def evidence(self, titles: Sequence[str]) -> np.ndarray:
        """Group score (excess over the catalog mean) of the group that claimed each title, 0
        if none. A title outside the fitted catalog gets the best picked group among its
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
