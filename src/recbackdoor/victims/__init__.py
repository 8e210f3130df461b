"""victims layer: the recommenders under attack (DESIGN section 4).

``tallrec`` and ``llara`` are LoRA fine-tunes of a causal LM (text-only and hybrid prompts);
``sasrec`` is the sequential recommender that gives ``llara`` its item embeddings, and a victim
of its own. Kept import-light: the victim modules (torch, transformers) load only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import ConfigError

VICTIMS = ("tallrec", "llara", "sasrec")


def _module(name: str) -> Any:
    """The victim's module (``victims/<name>.py``: ``train_victim``, ``load_victim``), imported
    when first asked for. A new victim is one module plus its name in ``VICTIMS``."""
    if name not in VICTIMS:
        raise ConfigError(f"unknown victim {name!r}; expected one of {', '.join(VICTIMS)}")
    return import_module(f"{__name__}.{name}")


def victim_trainer(name: str) -> Callable[..., Any]:
    """The ``train_victim(data, out, config, *, force)`` function of a victim."""
    return _module(name).train_victim


def victim_kind(model_dir: Any) -> str | None:
    """The victim a folder holds (``victim.json``), or None for a bare backbone."""
    path = Path(str(model_dir))
    if (path / "victim.json").is_file():
        from ..io_utils import read_json

        return read_json(path / "victim.json").get("victim")
    return None


def load_victim(model_dir: Any, **kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Load a trained victim directory (or a bare backbone name) for evaluation:
    ``(model, tokenizer, info)``; ``info["victim"]`` says which (``sasrec``: no tokenizer)."""
    kind = victim_kind(model_dir)
    if kind in ("llara", "sasrec"):
        return _module(kind).load_victim(model_dir, **kwargs)
    from .tallrec import load_victim as load_tallrec

    return load_tallrec(model_dir, **kwargs)
