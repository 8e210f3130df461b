"""What the baseline detectors share: the default threshold rule and title tokenisation.

Default threshold rule (detectors without a natural cut-off): the catalog a detector is fitted
on is mostly clean (BadRec triggers a minority of the titles), so the threshold is set at a
false-positive rate of ``flag_rate`` on the fitted catalog's own scores, i.e. at most
``flag_rate`` of the catalog is flagged (default 1%). An explicit ``threshold`` overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...eval.detection import threshold_at_fpr
from .lm import DOMAIN_NOUN, TitleLM

DEFAULT_FLAG_RATE = 0.01

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


def leave_one_word_out(titles: Sequence[str]) -> tuple[list[str], list[tuple[int, int]], list[list[str]]]:
    """The texts ONION and BKI feed their LM: each title of two or more words, then the title
    with each word removed in turn. ``owners[k]`` = (title index, removed word index, or -1 for
    the whole title) of ``texts[k]``; ``split[i]`` = the words of title ``i``."""
    texts: list[str] = []
    owners: list[tuple[int, int]] = []
    split = [words(t) for t in titles]
    for i, (title, ws) in enumerate(zip(titles, split, strict=True)):
        if len(ws) < 2:
            continue
        texts.append(title)
        owners.append((i, -1))
        texts.extend(without(title, ws, j) for j in range(len(ws)))
        owners.extend((i, j) for j in range(len(ws)))
    return texts, owners, split


class LMDetectorBase:
    """Set-up shared by the detectors that read titles with a language model (ONION, BKI):
    the backbone, the threshold rule, and a lazily loaded (or injected) ``TitleLM``."""

    def __init__(
        self,
        backbone: str = "smollm2-135m",
        threshold: float | None = None,
        flag_rate: float = DEFAULT_FLAG_RATE,
        batch_size: int = 64,
        device: Any = None,
        dtype: Any = None,
        lm: Any = None,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self._explicit = threshold
        self.threshold = float("inf") if threshold is None else float(threshold)
        self.flag_rate = check_flag_rate(flag_rate)
        self._lm = lm
        self._lm_options = {
            "batch_size": batch_size, "device": device, "dtype": dtype, "progress": progress,
        }  # fmt: skip
        self._reset()

    def _reset(self) -> None:
        """Set up the detector's own state (caches); subclasses override."""

    @property
    def lm(self) -> Any:
        if self._lm is None:
            self._lm = TitleLM(self.backbone, **self._lm_options)
        return self._lm
