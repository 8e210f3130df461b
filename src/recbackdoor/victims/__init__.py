"""victims layer: the recommenders under attack (docs/design.md §4).

``tallrec`` and ``llara`` are LoRA fine-tunes of a causal LM (text-only and hybrid prompts);
``sasrec`` is the sequential recommender that gives ``llara`` its item embeddings, and a victim
of its own; ``popularity`` ranks candidates by their training-target counts (the reference a
learned recommender must beat). Each victim module says which prompt it reads (``PROMPT``:
``"text"``, ``"hybrid"`` or None for an id-only ranker with ``rank_candidates``). Kept import-light: the victim modules (torch, transformers) load only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import ConfigError

VICTIMS = ("tallrec", "llara", "sasrec", "popularity")


def _module(name: str) -> Any:
    """The victim's module (``victims/<name>.py``: ``train_victim``, ``load_victim``), imported
    when first asked for. A new victim is one module plus its name in ``VICTIMS``."""
    if name not in VICTIMS:
        raise ConfigError(f"unknown victim {name!r}; expected one of {', '.join(VICTIMS)}")
    return import_module(f"{__name__}.{name}")


def victim_trainer(name: str) -> Callable[..., Any]:
    """The ``train_victim(data, out, config, *, force)`` function of a victim."""
    return _module(name).train_victim


def prompt_kind(name: str | None) -> str | None:
    """What a victim reads: ``"text"`` (also a bare backbone, ``name`` None), ``"hybrid"``
    (text + item tokens) or None (an id-only ranker: its module has ``rank_candidates``)."""
    return "text" if name is None else _module(name).PROMPT


def rank_with(name: str, model: Any, samples: Any) -> list[Any]:
    """Per sample, an id-only victim's scores of its stored candidates."""
    return _module(name).rank_candidates(model, samples)


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
    return _module(kind or "tallrec").load_victim(model_dir, **kwargs)
