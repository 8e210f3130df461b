"""Baseline detectors (docs/design.md §5), each a :class:`~recbackdoor.defense.base.Detector`.

``make_detector(name, **options)`` builds one by name; options a detector does not take are
ignored, so callers can pass a common set (backbone, seed, threshold). Modules import their
heavy libraries lazily.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from ..base import Detector


def _onion(**kw: Any) -> Detector:
    from .onion import OnionDetector

    return _build(OnionDetector, kw)


def _bki(**kw: Any) -> Detector:
    from .bki import BKIDetector

    return _build(BKIDetector, kw)


def _stat(**kw: Any) -> Detector:
    from .stat import StatDetector

    return _build(StatDetector, kw)


def _embed(**kw: Any) -> Detector:
    from .embed import EmbedDetector

    return _build(EmbedDetector, kw)


def _hidden_chars(**kw: Any) -> Detector:
    from .hidden_chars import HiddenCharDetector

    return _build(HiddenCharDetector, kw)


def _build(cls: type, options: dict[str, Any]) -> Detector:
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


BASELINES: dict[str, Callable[..., Detector]] = {
    "onion": _onion,
    "bki": _bki,
    "stat": _stat,
    "embed": _embed,
    "hidden-chars": _hidden_chars,
}


def make_detector(name: str, **options: Any) -> Detector:
    """A fresh, unfitted baseline detector; ``ConfigError`` for an unknown name."""
    try:
        factory = BASELINES[name]
    except KeyError:
        raise ConfigError(f"unknown baseline detector {name!r}; use one of {', '.join(BASELINES)}") from None
    return factory(**options)


__all__ = ["BASELINES", "make_detector"]
