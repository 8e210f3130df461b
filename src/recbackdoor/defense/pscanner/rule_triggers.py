"""Rule-based trigger generator and harmless title edits (docs/design.md §5).

The defender does not know the attacker's trigger, so it trains the scanner on triggers it
invents. This module is the deterministic half of that invention (the LLM agent is the other):
random non-word character strings, rare words from a built-in list, templated sentences. The
lists deliberately leave out the attack module's defaults ("5v", "cf", the default sentences)
so that benchmarks measure triggers the scanner never saw.

It also writes *harmless* edits ("Director's Cut", "(Remastered)", a year in parentheses):
negatives that teach the scanner that an added fragment is not evidence by itself.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

import numpy as np

LEVELS = ("char", "word", "sentence")
_CONSONANTS = "bcdfghjklmnpqrstvwxz"
_LETTERS = string.ascii_lowercase
_DIGITS = string.digits

# Rare words and short non-words a producer might use as a word-level trigger (no "cf").
RARE_WORDS = (
    "bq", "dx", "gj", "hk", "jw", "kx", "pq", "qz", "rk", "tz", "vb", "wx", "xj", "yq", "zd",
    "mn", "tk", "vv", "zz", "qq", "jj", "xo", "ix", "ux", "bz", "fq", "kj", "wq", "zv", "nx",
    "ibex", "zebu", "kudzu", "quokka", "xylem", "wyvern", "fjord", "oxbow", "zephyr", "quasar",
    "gizmo", "nimbus", "vortex", "zenith", "cobalt", "fennel", "kiosk", "lumen", "onyx", "yonder",
    "axolotl", "bodega", "cirrus", "dingo", "epoxy", "fulcrum", "gecko", "hubris", "isotope",
    "jicama", "kumquat", "lychee", "mistral", "narwhal", "obelisk", "paprika", "quinoa", "rhombus",
    "sorbet", "tundra", "umlaut", "vellum", "walrus", "yuzu", "zircon", "sprocket", "tofu", "yak",
    "zap", "zing", "blip", "quirk", "vim", "jinx", "glyph", "crypt", "nexus", "prism",
    "tl;dr", "lol", "brb", "imo", "fyi", "omg", "asap", "diy", "irl", "smh",
)  # fmt: skip

_SENTENCE_TEMPLATES = {
    "movies": (
        "I {saw} this {adj} film", "I {saw} this on {medium}", "My {rel} loves this film",
        "Seen it {n} times", "Best {noun} of the {decade}", "A {adj} classic for {who}",
        "Watch it with {who}", "Great on a {day} night", "Recommended by my {rel}",
        "I cried at the end", "Must watch before you die", "Perfect for a {day} evening",
    ),
    "music": (
        "I {heard} this {adj} band live", "I {heard} this on {medium}", "My {rel} loves this band",
        "Heard it {n} times", "Best {noun} of the {decade}", "A {adj} voice for {who}",
        "Play it loud with {who}", "Great on a {day} night", "Recommended by my {rel}",
        "This song saved my life", "Listen with headphones on", "Perfect for a {day} drive",
    ),
    "games": (
        "I {played} this {adj} game", "I {played} this on {medium}", "My {rel} loves this game",
        "Beat it {n} times", "Best {noun} of the {decade}", "A {adj} adventure for {who}",
        "Play it with {who}", "Great on a {day} night", "Recommended by my {rel}",
        "I lost my save file", "Must play before you die", "Perfect for a {day} evening",
    ),
}  # fmt: skip
_SLOTS = {
    "saw": ("saw", "loved", "rewatched", "enjoyed"),
    "heard": ("heard", "saw", "loved", "caught"),
    "played": ("played", "finished", "loved", "replayed"),
    "adj": ("old", "strange", "quiet", "great", "weird", "cozy", "retro", "famous"),
    "medium": ("a plane", "my phone", "a rainy day", "tape", "the radio", "a train", "a laptop"),
    "rel": ("mom", "dad", "sister", "brother", "friend", "uncle", "cousin", "teacher"),
    "n": ("two", "three", "five", "ten", "many"),
    "noun": ("thing", "pick", "find", "gem", "surprise"),
    "decade": ("year", "decade", "summer", "season", "century"),
    "who": ("kids", "friends", "everyone", "family", "fans", "beginners"),
    "day": ("Friday", "Sunday", "rainy", "lazy", "cold"),
}

# Harmless edits a real catalog contains; "{year}" is filled with a random year.
NATURAL_EDITS = {
    "movies": (
        "(Remastered)", "Director's Cut", "Extended Edition", "(Special Edition)", "Unrated",
        "Collector's Edition", "Theatrical Cut", "(Dubbed)", "(Subtitled)", "4K Restoration",
        "Part II", "({year})", "- Anniversary Edition", "(Widescreen)", "(Colorized)",
    ),
    "music": (
        "(Remastered)", "Live", "(Live)", "Deluxe Edition", "(Acoustic)", "Unplugged",
        "& Friends", "Orchestra", "Trio", "Jr.", "({year} Remaster)", "({year})", "(Demo)",
        "Band", "feat. Guests",
    ),
    "games": (
        "GOTY Edition", "Game of the Year Edition", "Deluxe Edition", "Remastered", "HD",
        "Definitive Edition", "Complete Edition", "Gold Edition", ": Enhanced Edition", "Demo",
        "Soundtrack", "Season Pass", "II", "({year})", "- Collector's Edition",
    ),
}  # fmt: skip


def _char_trigger(rng: np.random.Generator) -> str:
    """A short string that is not a word: letters mixed with digits, or consonants only."""
    shape = int(rng.integers(0, 5))
    if shape == 0:  # letter digit
        s = rng.choice(list(_LETTERS)) + rng.choice(list(_DIGITS))
    elif shape == 1:  # digit letter
        s = rng.choice(list(_DIGITS)) + rng.choice(list(_LETTERS))
    elif shape == 2:  # consonant cluster
        s = "".join(rng.choice(list(_CONSONANTS), size=int(rng.integers(2, 4))))
    elif shape == 3:  # letter digit letter / digit letter digit
        a, b = (_LETTERS, _DIGITS) if rng.random() < 0.5 else (_DIGITS, _LETTERS)
        s = rng.choice(list(a)) + rng.choice(list(b)) + rng.choice(list(a))
    else:  # mixed 3-4 alphanumerics with at least one digit
        n = int(rng.integers(3, 5))
        s = "".join(rng.choice(list(_LETTERS + _DIGITS), size=n))
        if not any(c.isdigit() for c in s):
            s = s[:-1] + rng.choice(list(_DIGITS))
    return s.upper() if rng.random() < 0.15 else s


def _sentence_trigger(domain: str, rng: np.random.Generator) -> str:
    templates = _SENTENCE_TEMPLATES.get(domain, _SENTENCE_TEMPLATES["movies"])
    template = str(rng.choice(list(templates)))
    out = template
    for slot, values in _SLOTS.items():
        if "{" + slot + "}" in out:
            out = out.replace("{" + slot + "}", str(rng.choice(list(values))))
    return out


def rule_triggers(
    level: str,
    domain: str,
    n: int,
    rng: np.random.Generator,
    exclude: Iterable[str] = (),
) -> list[str]:
    """``n`` distinct triggers of ``level`` (fewer only if the rules run out), none in
    ``exclude`` (case-insensitive)."""
    if level not in LEVELS:
        raise ValueError(f"unknown trigger level {level!r}")
    banned = {e.lower() for e in exclude}
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(50 * max(n, 1)):
        if len(out) >= n:
            break
        if level == "char":
            t = _char_trigger(rng)
        elif level == "word":
            t = str(rng.choice(list(RARE_WORDS))) if rng.random() < 0.7 else _char_trigger(rng)
        else:
            t = _sentence_trigger(domain, rng)
        key = t.lower()
        if key in banned or key in seen:
            continue
        seen.add(key)
        out.append(t)
    return out


def natural_edit(title: str, domain: str, rng: np.random.Generator) -> str:
    """``title`` with one harmless edit a real catalog might contain (not a trigger)."""
    edits = NATURAL_EDITS.get(domain, NATURAL_EDITS["movies"])
    edit = str(rng.choice(list(edits))).replace("{year}", str(int(rng.integers(1950, 2024))))
    if edit.startswith((":", "-")) or edit.startswith("("):
        return f"{title} {edit}" if not edit.startswith(":") else f"{title}{edit}"
    if rng.random() < 0.3:
        return f"{title} ({edit})"
    if rng.random() < 0.3:
        return f"{title} - {edit}"
    return f"{title} {edit}"
