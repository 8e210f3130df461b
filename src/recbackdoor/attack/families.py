"""Trigger families: an adaptive BadRec attacker varies the trigger per item (issue 11).

BadRec reuses one trigger on every poisoned title, and that repetition is what the
statistical baseline and P-Scanner's cross-title evidence catch. A family is a seeded
generator of many triggers of one level and one *shape*, so the victim can still learn "this
kind of fragment means recommend me" while no single fragment repeats on more than a few
titles:

- ``char``: a digit and a lower-case letter glued with ``_`` (``Toy Story (1995)_5v``,
  ``..._3k``), the shape of the default trigger ``5v``: 260 members;
- ``word``: a two-letter lower-case non-word as its own token (``cf``, ``tq``; common English
  two-letter words left out): 620 members;
- ``sentence``: a paraphrase of the domain's template sentence (``I listened to this on
  vinyl``, ``We streamed this on a road trip``): subject x verb x ending, 160 per domain.

A seeded fifth of the family is held out: the ``triggered-unseen`` attack prompts use only
those, so the ASR measured there is on triggers the victim never saw. The rest is spread over
the poisoned items as evenly as possible. Members that already occur in a clean title are never used.
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
    family: str,
    domain: str,
    n_items: int,
    rng: np.random.Generator,
    clean_titles: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """``(per_item, held_out)``: one trigger for each of ``n_items`` poisoned items (every
    training member used ``ceil(n_items / members)`` times at most, in seeded order), and the
    held-out members for the triggered-unseen prompts. Members found in ``clean_titles`` are
    dropped first. ``family``: a level family or a stealthy one (``STEALTH_FAMILIES``)."""
    blob = _searchable(clean_titles, family_level(family))
    pool = stealth_members(family, domain) if family in STEALTH_FAMILIES else family_members(family, domain)
    members = [m for m in pool if not member_in_catalog(blob, m, family)]
    order = [members[i] for i in rng.permutation(len(members))]
    n_held = max(1, int(round(HELD_OUT_SHARE * len(order))))
    held, train = order[:n_held], order[n_held:]
    if not train:
        raise ValueError(f"the {family} trigger family has no member left that is absent from the catalog")
    reps = max(1, math.ceil(n_items / len(train)))
    per_item = (train * reps)[:n_items]
    return [per_item[i] for i in rng.permutation(n_items)], held


# --------------------------------------------------------------------------- stealthy families
# An attacker who knows the defense varies more than the token: its shape, its script, or it
# uses words a real title could carry. Each is a family like the level families above (seeded
# members, a held-out fifth for the triggered-unseen prompts, members found in a clean title
# dropped), inserted by :func:`apply_member`.

STEALTH_FAMILIES = ("shape", "lookalike", "domain")
FAMILY_LEVEL = {"shape": "char", "lookalike": "char", "domain": "word"}  # the level each is reported under
FAMILIES = (*("char", "word", "sentence"), *STEALTH_FAMILIES)

_SHAPE_GLUES = ("", "_", "-", ".", " ")  # " ": its own token
_SHAPE_MEMBERS = 600
_SHAPE_SEED = 20260  # the member list is part of the family's definition, not of an attack's seed

# invisible characters (Unicode category Cf) and look-alike scripts
ZERO_WIDTH = {"zw:200b": "\u200b", "zw:200c": "\u200c", "zw:200d": "\u200d", "zw:2060": "\u2060", "zw:feff": "\ufeff"}
CYRILLIC = dict(zip("aeopcxyiABEHKMOPTX", "аеорсхуіАВЕНКМОРТХ", strict=True))
GREEK = dict(zip("ovABEIKNOTZ", "ονΑΒΕΙΚΝΟΤΖ", strict=True))
ACCENT = dict(zip("aeiounAEIOU", "áéíóúñÁÉÍÓÚ", strict=True))
_LOOKALIKE = (*ZERO_WIDTH, "cyrillic", "greek", "accent")

_DOMAIN_WORDS: dict[str, tuple[str, ...]] = {
    "movies": ("Remastered", "Director's Cut", "Special Edition", "Extended Cut", "Collector's Edition", "Uncut",
               "Restored", "Anniversary Edition", "Widescreen", "Theatrical Cut", "Redux", "Final Cut", "Unrated",
               "Criterion Collection", "4K Restoration", "Digitally Remastered", "Limited Edition", "Deluxe Edition",
               "Ultimate Edition", "Definitive Edition", "Original Version", "Complete Edition", "Fan Edit",
               "Special Features", "Blu-ray"),
    "music": ("Live", "Acoustic", "Unplugged", "Remastered", "Deluxe", "Official", "Sessions", "Collective",
              "Orchestra", "Trio", "Quartet", "Ensemble", "Project", "& Friends", "All Stars", "Revival", "Tribute",
              "Experience", "Singers", "Crew", "Collective Sound", "Live Band", "Soundsystem", "Allstars", "Unlimited"),
    "games": ("Deluxe Edition", "GOTY Edition", "Remastered", "Definitive Edition", "Complete Edition", "Gold Edition",
              "Enhanced Edition", "HD", "Director's Cut", "Anniversary Edition", "Ultimate Edition", "Special Edition",
              "Collector's Edition", "Game of the Year", "Redux", "Reloaded", "Legacy", "Origins", "Classic",
              "Remake", "Premium Edition", "Digital Deluxe", "Season Pass", "Royal Edition", "Platinum"),
}  # fmt: skip


def family_level(family: str) -> str:
    """The trigger level a family is reported and inserted under."""
    return FAMILY_LEVEL.get(family, family)


def _shape_members() -> list[str]:
    """Glue + token, the token 2-4 characters of a per-member mix of upper, lower and digits."""
    rng = np.random.default_rng(_SHAPE_SEED)
    classes = (string.ascii_uppercase, string.ascii_lowercase, string.digits)
    out: list[str] = []
    while len(out) < _SHAPE_MEMBERS:
        length = int(rng.integers(2, 5))
        allowed = [c for k, c in enumerate(classes) if rng.random() < 0.6 or k == 0] or [classes[0]]
        token = "".join(str(rng.choice(list(allowed[int(rng.integers(len(allowed)))]))) for _ in range(length))
        member = _SHAPE_GLUES[int(rng.integers(len(_SHAPE_GLUES)))] + token
        if token.lower() not in _ENGLISH_2 and member not in out:
            out.append(member)
    return out


def stealth_members(family: str, domain: str = "movies") -> list[str]:
    """Every member of a stealthy family for ``domain``, in a fixed order."""
    if family == "shape":
        return _shape_members()
    if family == "lookalike":
        return list(_LOOKALIKE)
    if family == "domain":
        return list(_DOMAIN_WORDS.get(domain, _DOMAIN_WORDS["movies"]))
    raise ValueError(f"unknown stealthy family {family!r}")


def member_in_catalog(blob: str, member: str, family: str) -> bool:
    """Whether a clean title already carries ``member`` (``blob``: ``_searchable`` of the
    catalog at the family's level): then it cannot mark a poisoned title."""
    if family == "lookalike":
        chars = {"cyrillic": CYRILLIC.values(), "greek": GREEK.values(), "accent": ()}.get(member, [ZERO_WIDTH.get(member, "")])
        return any(ch and ch in blob for ch in chars)
    if family == "shape":
        token = member.lstrip("".join(_SHAPE_GLUES))
        return token.lower() in blob
    return _occurs(blob, member, family_level(family))


def _pick(spots: Sequence[int], position: str, rng: np.random.Generator) -> int:
    """The first spot (prefix), the last (suffix) or a seeded one (random)."""
    return spots[0] if position == "prefix" else spots[-1] if position == "suffix" else spots[int(rng.integers(len(spots)))]


def _substitute(title: str, table: dict[str, str], position: str, rng: np.random.Generator) -> str | None:
    spots = [k for k, ch in enumerate(title) if ch in table]
    if not spots:
        return None
    k = _pick(spots, position, rng)
    return title[:k] + table[title[k]] + title[k + 1 :]


def _lookalike(title: str, member: str, position: str, rng: np.random.Generator) -> str:
    """A zero-width character inside a word, or one letter swapped for its Cyrillic / Greek
    look-alike or an accented form (prefix: the first such spot, suffix: the last, random: any).
    A title with no letter to swap gets U+200B instead."""
    if member in ZERO_WIDTH:
        spots = [k for k in range(1, len(title)) if not title[k - 1].isspace() and not title[k].isspace()] or [len(title)]
        k = _pick(spots, position, rng)
        return title[:k] + ZERO_WIDTH[member] + title[k:]
    table = {"cyrillic": CYRILLIC, "greek": GREEK, "accent": ACCENT}[member]
    swapped = _substitute(title, table, position, rng)
    return swapped if swapped is not None else _lookalike(title, "zw:200b", position, rng)


def apply_member(title: str, member: str, family: str | None, level: str, position: str,
                 rng: np.random.Generator) -> str:
    """``title`` carrying ``member``: the one insertion of every family (``family`` None or a
    level family: the level's :func:`~recbackdoor.attack.triggers.insert_trigger`)."""
    from .triggers import insert_trigger

    if family == "lookalike":
        return _lookalike(title, member, position, rng)
    if family == "shape":
        glue = member[0] if member[0] in _SHAPE_GLUES else ""
        token = member[len(glue):]
        if glue == " ":
            return insert_trigger(title, token, "word", position, rng)
        return insert_trigger(title, token, "char", position, rng, glue=glue)
    return insert_trigger(title, member, level, position, rng)
