"""Robust negatives (docs/design.md §5): a scanner fitted on the catalog under suspicion must not learn
that catalog's poisoned titles as clean.

``train_scanner`` draws its clean negatives (and the titles it inserts synthetic triggers into,
and the held-out clean validation titles) from the catalog it is given. On real BadRec output
10-20% of those titles carry one reused trigger; trained on them as "clean", the scanner learns
that this trigger is harmless. So before training, a cheap first pass with no model finds the
titles that share a *repeated fragment of an unusual shape* and leaves them out of training:

- fragments by position: the last / first 1-4 words, and the tail / head of the last / first
  word cut at a separator (``_ - . ~ |`` ...), as BadRec glues a char trigger;
- a fragment is suspicious when at least ``min_count`` titles share it and it is most of the
  fragments of its shape in that position (``concentration``; shape maps upper-case letters to
  ``A``, lower-case to ``a``, digits to ``9``): ``_5v`` at the end of 336 movie titles is the
  only ``_9a`` ending, while ``(1995)`` is one of ~1,600 ``(9999)`` endings; fragments made
  only of function words ("The", "of the") never count.

The pass is deliberately generous: dropping a clean title from the negatives costs a little
training data, keeping a poisoned one teaches the scanner the attack is clean. It cannot see
a trigger inserted at a random position with an ordinary shape; the LLM and the cross-title
evidence still score every title of the catalog afterwards, this only chooses the negatives.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

_SEP = "_-~|+.:;#@*/\\"
_SEP_RE = re.compile(f"[{re.escape(_SEP)}]")
_FUNCTION_WORDS = frozenset(
    "the a an of and or in on at to for with from by vs vs. feat. ft. & "
    "le la les l' el los las il lo gli der die das den ein eine de des du et y und".split()
)


def shape(text: str) -> str:
    """Character classes: ``Toy_5v`` -> ``Aaa_9a``."""
    return "".join("A" if c.isupper() else "a" if c.isalpha() else "9" if c.isdigit() else c for c in text)


def positional_fragments(title: str, max_words: int = 4) -> Iterator[tuple[str, str]]:
    """(position kind, fragment) pairs of a title (see the module docstring)."""
    ws = title.split()
    if not ws:
        return
    found: list[tuple[str, str]] = []
    for k in range(1, min(max_words, len(ws)) + 1):
        found.append(("word-suffix", " ".join(ws[-k:])))
        found.append(("word-prefix", " ".join(ws[:k])))
    for m in _SEP_RE.finditer(ws[-1]):
        for start in (m.start(), m.end()):
            if 0 < start < len(ws[-1]):
                found.append(("char-suffix", ws[-1][start:]))
    for m in _SEP_RE.finditer(ws[0]):
        for end in (m.start(), m.end()):
            if 0 < end < len(ws[0]):
                found.append(("char-prefix", ws[0][:end]))
    for kind, frag in found:
        if any(c.isalnum() for c in frag) and not all(w.lower() in _FUNCTION_WORDS for w in frag.split()):
            yield kind, frag


def suspicious_titles(
    titles: Sequence[str], min_count: int = 3, min_concentration: float = 0.5, max_words: int = 4
) -> dict[str, str]:
    """Titles that share a repeated fragment of an unusual shape -> that fragment (see the
    module docstring). No share cap: a trigger on 20% of the titles is found."""
    distinct = list(dict.fromkeys(str(t) for t in titles))
    df: Counter[tuple[str, str]] = Counter()
    shape_df: Counter[tuple[str, str]] = Counter()
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in distinct:
        frags = set(positional_fragments(t, max_words))
        df.update(frags)
        shape_df.update({(kind, shape(f)) for kind, f in frags})
        for f in frags:
            holders[f].append(t)
    out: dict[str, str] = {}
    for (kind, frag), n in df.items():
        if n >= min_count and n / shape_df[(kind, shape(frag))] >= min_concentration:
            for t in holders[(kind, frag)]:
                out.setdefault(t, frag)
    return out


def robust_negatives(titles: Sequence[str], max_drop_share: float = 0.5, **kw) -> tuple[list[str], dict[str, str]]:
    """The catalog's titles minus the suspicious ones, and what was dropped (title ->
    fragment). When the pass would drop more than ``max_drop_share`` of the catalog, the
    statistic is not telling poison from style, so nothing is dropped."""
    distinct = list(dict.fromkeys(str(t) for t in titles))
    dropped = suspicious_titles(distinct, **kw)
    if len(dropped) > max_drop_share * len(distinct):
        return distinct, {}
    return [t for t in distinct if t not in dropped], dropped
