"""What the baseline detectors share: the default threshold rule and title tokenisation.

Default threshold rule (detectors without a natural cut-off): the catalog a detector is fitted
on is mostly clean (BadRec poisons well under 1% of the titles), so the threshold is set at a
false-positive rate of ``flag_rate`` on the fitted catalog's own scores, i.e. at most
``flag_rate`` of the catalog is flagged (default 1%). An explicit ``threshold`` overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ...errors import ConfigError
from ...eval.detection import threshold_at_fpr

DEFAULT_FLAG_RATE = 0.01

# A domain noun for prompts/context ("a movie title: ...").
DOMAIN_NOUN = {"movies": "movie", "music": "music artist", "games": "video game"}

_SEPARATORS = "_-~|+.:;#@*/\\"


def check_domain(domain: str) -> str:
    if domain not in DOMAIN_NOUN:
        raise ConfigError(f"unknown domain {domain!r}; expected one of {sorted(DOMAIN_NOUN)}")
    return domain


def check_flag_rate(flag_rate: float) -> float:
    if not 0.0 <= flag_rate <= 1.0:
        raise ConfigError(f"flag_rate must be in [0, 1], got {flag_rate}")
    return flag_rate


def calibrated_threshold(explicit: float | None, fit_scores: np.ndarray, flag_rate: float) -> float:
    """``explicit`` when given, else the threshold flagging at most ``flag_rate`` of the catalog."""
    if explicit is not None:
        return float(explicit)
    return threshold_at_fpr(fit_scores, flag_rate)


def words(title: str) -> list[str]:
    """Whitespace words; a one-word title is split further at separator characters
    (``Babe_5v`` -> ``Babe``, ``_5v``) so a glued fragment can still be removed on its own."""
    parts = title.split()
    if len(parts) == 1:
        pieces = [p for p in re.split(f"(?=[{re.escape(_SEPARATORS)}])", parts[0]) if p]
        if len(pieces) > 1:
            return pieces
    return parts


def without(title: str, word_list: Sequence[str], index: int) -> str:
    """The title with word ``index`` removed (space-joined when the words were whitespace words)."""
    rest = [w for j, w in enumerate(word_list) if j != index]
    joiner = " " if len(title.split()) > 1 else ""
    return joiner.join(rest)
