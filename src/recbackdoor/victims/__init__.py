"""victims layer: LoRA fine-tuned recommenders (DESIGN section 4).

Kept import-light: the victim modules (torch, transformers) load only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, RecBackdoorError

VICTIMS = ("tallrec", "llara")


def victim_trainer(name: str) -> Callable[..., Any]:
    """The ``train_victim(data, out, config, *, force)`` function of a victim."""
    if name == "tallrec":
        from .tallrec import train_victim

        return train_victim
    if name == "llara":
        raise RecBackdoorError("victim 'llara' is not implemented yet (a later issue); use --victim tallrec")
    raise ConfigError(f"unknown victim {name!r}; expected one of {', '.join(VICTIMS)}")


def load_victim(model_dir: Any, **kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Load a trained victim directory (or a bare backbone name) for evaluation."""
    from .tallrec import load_victim as load_tallrec

    return load_tallrec(model_dir, **kwargs)
