"""Invisible and look-alike characters in a title: the one input rule ``scan`` and ``defend``
apply before any model (docs/user-guide/defense.md, "Invisible and look-alike characters").

Both are legal Unicode and real catalogs carry them (a zero-width joiner inside an emoji, a
zero-width non-joiner in a Persian name, a band name written in Cyrillic), so the loaders keep
titles byte-exact and nothing is normalised away. What a real title does not do, following the
confusable-detection rules of Unicode TR39, is:

- hold an invisible *format* character (category Cf: U+200B, U+2060, U+FEFF, ...; the soft
  hyphen excepted) next to a Latin, Greek or Cyrillic letter or digit, where no script needs
  one (emoji and Persian or Indic names use them between their own characters); or
- carry, inside a word of one script, a letter of another script that Unicode's confusables
  data (TR39, the ``confusable-homoglyphs`` package) lists as a look-alike of a plain letter of
  the first: ``Stоry`` with a Cyrillic ``о`` reads as ``Story`` and tokenises differently.
  Stylised names that mix scripts with letters that do *not* imitate one (``KoЯn``,
  ``Zемфира``, ``EPΘCH``) are left alone.

:func:`hidden_char_reason` names the first such spot; the ``hidden-chars`` detector flags every
title that has one. An added accent (``Tóy``) is neither and is left to the other detectors.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np

_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")
SOFT_HYPHEN = "\u00ad"  # a hyphenation hint inside words: the one format character these scripts use
# the plain letters of each script a look-alike imitates (ASCII, basic Russian, basic Greek)
_PLAIN = {"LATIN": lambda c: c.isascii() and c.isalpha(), "CYRILLIC": lambda c: "\u0410" <= c <= "\u044f",
          "GREEK": lambda c: "\u0391" <= c <= "\u03c9"}


def _script(ch: str) -> str | None:
    """LATIN / CYRILLIC / GREEK for a letter of those scripts, else None."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return next((s for s in _SCRIPTS if name.startswith(s)), None)


def _alnum_script(ch: str) -> bool:
    return ch.isdigit() or _script(ch) is not None


def _imitates(ch: str, script: str) -> bool:
    """Whether ``ch`` is, by Unicode's confusables data (TR39), a look-alike of one plain
    letter of ``script``."""
    from confusable_homoglyphs import confusables

    found = confusables.is_confusable(ch, greedy=True, preferred_aliases=[script.lower()]) or []
    return any(len(h["c"]) == 1 and _PLAIN[script](h["c"]) for f in found for h in f["homoglyphs"])


def hidden_char_reason(title: str) -> str | None:
    """Why ``title`` looks doctored (an invisible character between letters, or a word of one
    script with a look-alike letter of another), or None."""
    for k, ch in enumerate(title):
        if unicodedata.category(ch) == "Cf" and ch != SOFT_HYPHEN:
            before, after = title[k - 1 : k], title[k + 1 : k + 2]
            if any(_alnum_script(c) for c in before + after):
                return f"invisible U+{ord(ch):04X} ({unicodedata.name(ch, 'format character')}) at {k + 1}"
    for word in title.split():
        scripts = [s for s in map(_script, word) if s]
        if len(set(scripts)) < 2:
            continue
        major = Counter(scripts).most_common(1)[0][0]
        for ch in word:
            script = _script(ch)
            if script and script != major and _imitates(ch, major):
                return f"the {major.lower()} word {word!r} holds the {script.lower()} look-alike {ch!r} (U+{ord(ch):04X})"
    return None


class HiddenCharDetector:
    """Flags the titles :func:`hidden_char_reason` finds (score 1) and no other (score 0)."""

    name = "hidden-chars"
    threshold = 0.5

    def fit(self, titles: Sequence[str], domain: str) -> HiddenCharDetector:
        return self

    def score(self, titles: Sequence[str]) -> np.ndarray:
        return np.asarray([float(hidden_char_reason(str(t)) is not None) for t in titles])

    def spans(self, titles: Sequence[str]) -> list[str | None]:
        return [hidden_char_reason(str(t)) for t in titles]
