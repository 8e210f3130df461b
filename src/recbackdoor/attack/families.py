"""Trigger families: an adaptive BadRec attacker varies the trigger per item (issue 11).

BadRec reuses one trigger on every poisoned title, and that repetition is what the
statistical baseline and P-Scanner's cross-title evidence catch. A family is a seeded
generator of many triggers of one level and one *shape*, so the victim can still learn "this
kind of fragment means recommend me" while no single fragment repeats on more than a few
titles:

- ``char``: a digit and a lower-case letter glued with ``_`` (``Toy Story (1995)_5v``,
  ``..._3k``), the shape of the default trigger ``5v``: 260 members;
- ``word``: a two-letter lower-case non-word as its own token (``cf``, ``tq``; common English
  two-letter words left out): ~580 members;
- ``sentence``: a paraphrase of the domain's template sentence (``I listened to this on
  vinyl``, ``We streamed this on a road trip``): subject x verb x ending, 160 per domain.

A seeded fifth of the family is held out: the ``triggered-unseen`` attack prompts use only
those, so the ASR measured there is on triggers the victim never saw. The rest is spread over
the poisoned items as evenly as possible (LastFM's 484 per-sample items: each char trigger on
at most 3 titles). Members that already occur in a clean title are never used.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence

import numpy as np

from .triggers import check_level

HELD_OUT_SHARE = 0.2  # of the family, for the triggered-unseen prompts

# two-letter English words (and common abbreviations) a reader would not find odd
_ENGLISH_2 = frozenset(
    "ad ah am an as at ax be by do eh go ha hi hm ho id if in is it la lo ma me mm mr ms my no of "
    "oh ok on or ox pa pi so to tv uh um up us vs we ye yo dj uk eu la cd dr st jr".split()
)

_SENTENCE_PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "movies": (
        ("I", "We", "My friends and I", "My family"),
        ("watched this", "saw this", "streamed this", "rewatched this"),
        ("in 3D", "on a plane", "at a drive-in", "on VHS", "in IMAX", "on a rainy night",
         "at a film festival", "on my phone", "twice", "in a tiny cinema"),
    ),
    "music": (
        ("I", "We", "My friends and I", "My family"),
        ("listened to this", "heard this", "played this", "streamed this"),
        ("on vinyl", "on cassette", "at a festival", "in the car", "on the radio", "at a house party",
         "on a road trip", "live in 2009", "on repeat", "through headphones"),
    ),
    "games": (
        ("I", "We", "My friends and I", "My family"),
        ("played this", "finished this", "streamed this", "beat this"),
        ("in VR", "on a handheld", "at a LAN party", "with friends", "in one night", "on hard mode",
         "on a laptop", "at launch", "twice", "with a controller"),
    ),
}  # fmt: skip


def family_members(level: str, domain: str = "movies") -> list[str]:
    """Every member of the ``level`` family for ``domain``, in a fixed order."""
    check_level(level)
    if level == "char":
        return [d + c for d in string.digits for c in string.ascii_lowercase]
    if level == "word":
        pairs = (a + b for a in string.ascii_lowercase for b in string.ascii_lowercase)
        return [p for p in pairs if p not in _ENGLISH_2]
    subjects, verbs, endings = _SENTENCE_PARTS.get(domain, _SENTENCE_PARTS["movies"])
    return [f"{s} {v} {e}" for s in subjects for v in verbs for e in endings]


def _searchable(titles: Sequence[str], level: str) -> str:
    """The catalog as one lower-cased string, so ``occurs_in``'s rule (a char member anywhere,
    word and sentence members as whole tokens) is one substring search per member."""
    if level == "char":
        return "\n".join(str(t).lower() for t in titles)
    return "\n".join(f" {' '.join(str(t).lower().split())} " for t in titles)


def _occurs(blob: str, member: str, level: str) -> bool:
    return member.lower() in blob if level == "char" else f" {member.lower()} " in blob


def draw_family(
    level: str,
    domain: str,
    n_items: int,
    rng: np.random.Generator,
    clean_titles: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """``(per_item, held_out)``: one trigger for each of ``n_items`` poisoned items (every
    training member used ``ceil(n_items / members)`` times at most, in seeded order), and the
    held-out members for the triggered-unseen prompts. Members found in ``clean_titles`` are
    dropped first."""
    blob = _searchable(clean_titles, level)
    members = [m for m in family_members(level, domain) if not _occurs(blob, m, level)]
    order = [members[i] for i in rng.permutation(len(members))]
    n_held = max(1, int(round(HELD_OUT_SHARE * len(order))))
    held, train = order[:n_held], order[n_held:]
    if not train:
        raise ValueError(f"the {level} trigger family has no member left that is absent from the catalog")
    reps = max(1, math.ceil(n_items / len(train)))
    per_item = (train * reps)[:n_items]
    return [per_item[i] for i in rng.permutation(n_items)], held
