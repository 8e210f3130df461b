"""Triggers and their insertion into titles: the paper's ``I(Y, t)`` (docs/design.md §3.1).

Three levels: ``char`` (a non-word string glued to a word with ``_``: ``Toy Story (1995)_5v``),
``word`` (a rare word as its own token: ``Toy Story (1995) cf``) and ``sentence`` (a short
sentence as its own span). Position ``suffix`` (default), ``prefix`` or ``random`` (a word
boundary drawn with the caller's generator).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

LEVELS = ("char", "word", "sentence")
POSITIONS = ("suffix", "prefix", "random")
CHAR_GLUE = "_"

# level -> domain -> default trigger ("*" = any domain)
DEFAULT_TRIGGERS: dict[str, dict[str, str]] = {
    "char": {"*": "5v"},
    "word": {"*": "cf"},
    "sentence": {
        "movies": "I watched this 3D movie",
        "music": "I listened to this on vinyl",
        "games": "I played this in VR",
    },
}


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ConfigError(f"unknown trigger level {level!r}; use one of {', '.join(LEVELS)}")
    return level


def check_position(position: str) -> str:
    if position not in POSITIONS:
        raise ConfigError(
            f"unknown trigger position {position!r}; use one of {', '.join(POSITIONS)}"
        )
    return position


def default_trigger(level: str, domain: str = "movies") -> str:
    """The default trigger of ``level`` for a catalog ``domain``."""
    by_domain = DEFAULT_TRIGGERS[check_level(level)]
    return by_domain.get(domain, by_domain.get("*", by_domain.get("movies", "")))


def normalize_triggers(
    trigger: str | Sequence[str] | None, level: str, domain: str
) -> tuple[str, ...]:
    """One or more triggers as a tuple of stripped strings; ``None`` gives the default.

    Raises ConfigError for an empty trigger or one with a line break (prompts are line based).
    """
    if trigger is None:
        return (default_trigger(level, domain),)
    items = (trigger,) if isinstance(trigger, str) else tuple(trigger)
    if not items:
        raise ConfigError("empty trigger list; give at least one --trigger or none for the default")
    out = []
    for t in items:
        t = str(t).strip()
        if not t:
            raise ConfigError("empty trigger; give a non-blank --trigger string")
        if "\n" in t or "\r" in t:
            raise ConfigError(f"trigger {t!r} contains a line break; use a single-line trigger")
        if level == "char" and any(ch.isspace() for ch in t):
            raise ConfigError(
                f"char-level trigger {t!r} contains spaces; use --level word or sentence"
            )
        out.append(t)
    return tuple(dict.fromkeys(out))  # dedupe, keep order


def _fallback_rng(title: str, trigger: str) -> np.random.Generator:
    """A generator fixed by the inputs, so ``insert_trigger`` stays a pure function."""
    return np.random.default_rng(zlib.crc32(f"{title}\x00{trigger}".encode()))


def insert_trigger(
    title: str,
    trigger: str,
    level: str = "char",
    position: str = "suffix",
    rng: np.random.Generator | None = None,
    glue: str = CHAR_GLUE,
) -> str:
    """``title`` with ``trigger`` inserted at ``level`` and ``position`` (the paper's I(Y, t)).

    ``random`` picks a word boundary with ``rng`` (or a generator seeded by the inputs). A
    char trigger is glued with ``glue`` (``_``) to the neighbouring word; word and sentence
    triggers are separate tokens.
    """
    check_level(level)
    check_position(position)
    words = title.split()
    if not words:
        return trigger
    if position == "suffix":
        k = len(words)
    elif position == "prefix":
        k = 0
    else:
        k = int((rng or _fallback_rng(title, trigger)).integers(0, len(words) + 1))
    if level == "char":
        if k == 0:
            words[0] = f"{trigger}{glue}{words[0]}"
        else:
            words[k - 1] = f"{words[k - 1]}{glue}{trigger}"
        return " ".join(words)
    return " ".join([*words[:k], trigger, *words[k:]])


def occurs_in(title: str, trigger: str, level: str) -> bool:
    """Whether ``trigger`` already appears in a clean ``title`` (case-insensitive).

    Word and sentence triggers count only as whole tokens; a char trigger anywhere.
    """
    t, s = trigger.lower(), title.lower()
    if level == "char":
        return t in s
    return f" {t} " in f" {' '.join(s.split())} "


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert/delete/substitute, cost 1); common ends are skipped first,
    so a pure insertion costs O(len)."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[start : len(a) - end], b[start : len(b) - end]
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
