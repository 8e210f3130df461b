"""Synthetic labelled titles for the scanner: positives carry a generated trigger, negatives are
clean titles or clean titles with a harmless edit (docs/design.md §5).

Insertion varies what BadRec fixes (position, and for char triggers the glue), so the scanner
learns "a foreign fragment was added", not one attack's exact format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...attack.triggers import DEFAULT_TRIGGERS, insert_trigger
from .rule_triggers import natural_edit

POSITION_WEIGHTS = {"suffix": 0.5, "prefix": 0.2, "random": 0.3}
CHAR_GLUES = ("_", "-", ".", "", " ")
CHAR_GLUE_WEIGHTS = (0.45, 0.15, 0.1, 0.15, 0.15)


def attack_default_triggers() -> tuple[str, ...]:
    """The attack module's default triggers: held out of training so that evaluations with
    them measure triggers the scanner never saw."""
    return tuple(sorted({t for by_domain in DEFAULT_TRIGGERS.values() for t in by_domain.values()}))


def insert_generated(title: str, trigger: str, level: str, rng: np.random.Generator) -> str:
    """``title`` with ``trigger`` at a random position; a char trigger gets a random glue."""
    positions = list(POSITION_WEIGHTS)
    position = str(rng.choice(positions, p=list(POSITION_WEIGHTS.values())))
    if level != "char":
        return insert_trigger(title, trigger, level, position, rng)
    glue = str(rng.choice(list(CHAR_GLUES), p=list(CHAR_GLUE_WEIGHTS)))
    words = title.split()
    if not words:
        return trigger
    k = {"suffix": len(words), "prefix": 0}.get(position)
    if k is None:
        k = int(rng.integers(0, len(words) + 1))
    if k == 0:
        words[0] = f"{trigger}{glue}{words[0]}"
    else:
        words[k - 1] = f"{words[k - 1]}{glue}{trigger}"
    return " ".join(words)


@dataclass(frozen=True)
class Example:
    """One labelled title: ``label`` 1 = something was injected. ``kind`` says how it was made
    (clean, edit, char, word, sentence) for logging and per-level metrics."""

    title: str
    label: int
    kind: str
    trigger: str = ""


def make_examples(
    clean_titles: Sequence[str],
    triggers: dict[str, Sequence[str]],
    domain: str,
    n: int,
    rng: np.random.Generator,
    positive_share: float = 0.5,
    edit_share: float = 0.4,
) -> list[Example]:
    """``n`` examples: ``positive_share`` triggered (levels in turn, triggers and titles drawn
    at random), the rest negatives of which ``edit_share`` carry a harmless edit."""
    levels = [lv for lv in ("char", "word", "sentence") if triggers.get(lv)]
    n_pos = int(round(n * positive_share)) if levels else 0
    out: list[Example] = []
    for i in range(n_pos):
        level = levels[i % len(levels)]
        trig = str(rng.choice(list(triggers[level])))
        title = str(rng.choice(list(clean_titles)))
        out.append(Example(insert_generated(title, trig, level, rng), 1, level, trig))
    for _ in range(n - n_pos):
        title = str(rng.choice(list(clean_titles)))
        if rng.random() < edit_share:
            out.append(Example(natural_edit(title, domain, rng), 0, "edit"))
        else:
            out.append(Example(title, 0, "clean"))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def poison_catalog(
    clean_titles: Sequence[str],
    trigger: str,
    level: str,
    share: float,
    rng: np.random.Generator,
    glue_random: bool = False,
) -> tuple[list[str], np.ndarray]:
    """A BadRec-like catalog: one ``trigger`` reused on ``share`` of the titles (at least one),
    at the suffix as BadRec does, or at random positions and glues with ``glue_random``.
    Returns the titles and the 0/1 ground truth."""
    titles = list(clean_titles)
    k = max(1, int(round(share * len(titles))))
    chosen = rng.choice(len(titles), size=k, replace=False)
    y = np.zeros(len(titles), dtype=int)
    for i in chosen:
        if glue_random:
            titles[i] = insert_generated(titles[i], trigger, level, rng)
        else:
            titles[i] = insert_trigger(titles[i], trigger, level, "suffix", rng)
        y[i] = 1
    return titles, y
