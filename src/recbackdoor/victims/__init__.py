"""victims layer: the recommenders under attack (docs/design.md §4), and their registry.

``tallrec`` and ``llara`` are LoRA fine-tunes of a causal LM (text-only and hybrid prompts);
``sasrec`` is the sequential recommender that gives ``llara`` its item embeddings, and a victim
of its own; ``popularity`` ranks candidates by their training-target counts (the reference a
learned recommender must beat).

A victim is a module with this interface (see ``docs/developer-guide.md``):

- ``train_victim(data, out, config, *, force, checkpoint_dir, save_steps)`` and
  ``load_victim(dir, *, dtype, device, merge) -> (model, tokenizer | None, info)``;
- ``PROMPT``: what it reads, ``"text"``, ``"hybrid"`` (text + item tokens) or None for an
  id-only ranker, which then has ``rank_candidates(model, samples)``;
- ``OPTIONS``: the training options it takes (keys of ``models.lora.TrainConfig``), so a study's
  stage depends on exactly those;
- ``WEIGHT_FILES`` (safetensors files in its folder besides an adapter) and ``ADAPTER`` (whether
  it has a peft adapter), checked before anything of a folder is loaded.

Config validation, the CLI and ``recbackdoor list`` read :data:`VICTIMS`; a new victim is one
module plus one :func:`register_victim` call. Kept import-light: the victim modules (torch,
transformers) load only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class VictimEntry:
    """A registered victim: its name, the module that implements it, one line on what it is."""

    name: str
    module: str
    summary: str
    defaults: tuple[tuple[str, str], ...] = ()  # (option, default) where it differs from TrainConfig's, for --help


VICTIMS: dict[str, VictimEntry] = {}


def register_victim(name: str, module: str, summary: str, defaults: tuple[tuple[str, str], ...] = ()) -> VictimEntry:
    """Add a victim (``module``: the dotted path of its implementation)."""
    entry = VictimEntry(name, module, summary, defaults)
    if VICTIMS.get(name, entry) != entry:
        raise ConfigError(f"victim {name!r} is already registered")
    VICTIMS[name] = entry
    return entry


for _name, _summary, _defaults in (
    ("tallrec", "LoRA fine-tune of a causal LM on the LLaRA-style text prompt", ()),
    ("llara", "LLaRA: the text prompt with an item token (projected SASRec embedding) after every title", ()),
    ("sasrec", "SASRec, the self-attentive sequential recommender (no LM; llara's item embeddings)",
     (("epochs", "50, early stop after 5 epochs without a better validation HR@1"), ("lr", "1e-3"),
      ("batch_size", "128"))),
    ("popularity", "ranks candidates by how often they are a training target (the reference to beat)",
     (("epochs", "not used"), ("lr", "not used"), ("batch_size", "not used"))),
):
    register_victim(_name, f"{__name__}.{_name}", _summary, _defaults)


def option_help(option: str, default: str) -> str:
    """``default`` (TrainConfig's) and every victim's own where it differs, for ``--help``."""
    own = [f"{name}: {dict(e.defaults)[option]}" for name, e in VICTIMS.items() if option in dict(e.defaults)]
    return f"default {default}" + (f" ({'; '.join(own)})" if own else "")


def _module(name: str) -> Any:
    """The victim's module, imported when first asked for."""
    if name not in VICTIMS:
        raise ConfigError(f"unknown victim {name!r}; expected one of {', '.join(VICTIMS)}")
    return import_module(VICTIMS[name].module)


def victim_options(name: str) -> tuple[str, ...]:
    """The training options a victim takes (its module's ``OPTIONS``)."""
    return tuple(_module(name).OPTIONS)


def check_victim_dir(path: Any) -> None:
    """Before anything of a victim folder is loaded: it exists (a backbone name without a path
    separator is let through), no link leads out of it, and the weights its victim declares are
    present as undamaged safetensors (``models.safety``). A folder without ``victim.json`` (a
    backbone) is left to the loader."""
    import os
    from pathlib import Path

    from ..errors import ConfigError
    from ..models.safety import check_model_dir

    looks_like_path = os.sep in str(path) or str(path).startswith(".")
    if looks_like_path and not Path(path).exists():
        raise ConfigError(f"{path}: victim directory not found; pass a directory written by `recbackdoor train`")

    kind = victim_kind(path)
    module = _module(kind) if kind in VICTIMS else None
    check_model_dir(path, "victim", weight_files=tuple(getattr(module, "WEIGHT_FILES", ())),
                    adapter=bool(getattr(module, "ADAPTER", True)))


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
    """The victim a folder holds (``victim.json``); None for a bare backbone, or when the file
    is unreadable (the loader then reports it, in one line)."""
    import json

    try:
        info = json.loads((Path(str(model_dir)) / "victim.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("victim") if isinstance(info, dict) else None


def load_victim(model_dir: Any, **kwargs: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Load a trained victim directory (or a bare backbone name) for evaluation:
    ``(model, tokenizer, info)``; ``info["victim"]`` says which (``sasrec``: no tokenizer)."""
    kind = victim_kind(model_dir)
    return _module(kind or "tallrec").load_victim(model_dir, **kwargs)
