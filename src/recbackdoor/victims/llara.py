"""The ``llara`` victim: LLaRA's hybrid item representation and curriculum (docs/design.md §4).

The prompt is the ``tallrec`` prompt with an item token after every history and candidate
title (``models.prompts.HybridPrompt``; token id ``ITEM_TOKEN_BASE + item``). The LM's input
embedding is wrapped by :class:`HybridEmbedding`: text tokens keep their embedding, an item
token gets ``projector(E[item])``, ``E`` the frozen item embeddings of a SASRec model trained
first on the same training samples (clean or poisoned), ``projector`` = Linear-GELU-Linear from
SASRec's size to the LM's hidden size, trained together with the LoRA weights. Everything else
(answer-only loss, LoRA, the HF ``Trainer``, checkpoints, ``accelerate launch``) is the
``tallrec`` machinery (``models.lora.train_lora`` with :class:`~recbackdoor.models.lora.TrainingHooks`).

Curriculum (LLaRA's): the batch of optimizer step ``s`` of ``S`` uses the hybrid prompt with
probability ``s / S``, else the text-only prompt (the same text without item tokens); the
choice is made inside the training loop from the Trainer's step counter and a seeded draw per
step (:func:`uses_hybrid`), so a resumed run makes the same choices. Evaluation always uses
the hybrid prompt, with both protocols (the item tokens only change the prompt's embeddings,
so the KV-cache scoring and generation run unchanged).

Output directory (written atomically)::

    adapter/               peft adapter (safetensors + adapter_config.json)
    projector.safetensors  the projector's weights
    sasrec/                the SASRec victim folder that gave E (a ``sasrec`` victim itself)
    victim.json            victim, backbone, configs, dataset, curriculum counts
    training_log.jsonl     one row per logging step
    timing.json            wall time (SASRec and LoRA), steps, tokens
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..data.types import SplitDataset
from ..errors import RecBackdoorError
from ..io_utils import atomic_output_dir, check_output_dir, read_json, write_json
from ..models.backbones import load_backbone
from ..models.lora import (
    AnswerOnlyCollator,
    TrainConfig,
    TrainingHooks,
    load_modules,
    log_lines,
    quiet_peft,
    save_modules,
    supports_answer_window,
    train_lora,
    weights_and_autocast,
)
from ..models.prompts import (
    ITEM_TOKEN_BASE,
    answer_ids,
    answer_text,
    hybrid_prompt_ids,
    sample_hybrid_prompt,
)
from . import sasrec as sasrec_victim
from .tallrec import OPTIONS as TALLREC_OPTIONS

VICTIM = "llara"
PROMPT = "hybrid"  # the text prompt with an item token after every title
OPTIONS = (*TALLREC_OPTIONS, "sasrec_epochs")  # tallrec's, plus its SASRec's epochs
WEIGHT_FILES = ("projector.safetensors", "sasrec/sasrec.safetensors")  # besides adapter/
ADAPTER = True
FORMAT_VERSION = 1
PROJECTOR = "projector"
CURRICULUM_STREAM = 11  # random stream of the curriculum draws
TEXT_PREFIX = "text_"  # collator keys of the text-only variant of a batch


# --------------------------------------------------------------------------- modules


def make_projector(rec_dim: int, hidden: int, seed: int) -> Any:
    """Linear(rec_dim, hidden) - GELU - Linear(hidden, hidden), fp32, seeded init."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(rec_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))


@cache
def _hybrid_class() -> Any:
    import torch
    from torch import nn

    class HybridEmbedding(nn.Module):
        """The LM's input embedding for hybrid prompts: ``embed`` for ids below
        ``ITEM_TOKEN_BASE``, ``projector(item_table[id - ITEM_TOKEN_BASE])`` for item tokens.
        ``item_table`` (SASRec's E) is a frozen, non-persistent buffer; ``embed`` stays the
        model's own module (so tied output embeddings stay tied)."""

        def __init__(self, embed: nn.Module, projector: nn.Module, item_table: torch.Tensor):
            super().__init__()
            self.embed = embed
            self.projector = projector
            self.register_buffer("item_table", item_table.detach().float().clone(), persistent=False)

        @property
        def weight(self) -> torch.Tensor:  # what HF code reads off an input embedding
            return self.embed.weight

        @property
        def num_embeddings(self) -> int:
            return self.embed.num_embeddings

        @property
        def embedding_dim(self) -> int:
            return self.embed.embedding_dim

        def project(self, items: torch.Tensor) -> torch.Tensor:
            """``projector(E[items])`` (fp32)."""
            if items.numel() and (int(items.min()) < 0 or int(items.max()) >= self.item_table.shape[0]):
                raise RecBackdoorError(
                    f"item token for item {int(items.max())} but SASRec knows {self.item_table.shape[0]} "
                    "items: evaluate the victim on the dataset it was trained on"
                )
            return self.projector(self.item_table[items].to(self.projector[0].weight.dtype))

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            is_item = input_ids >= ITEM_TOKEN_BASE
            if not bool(is_item.any()):
                out = self.embed(input_ids)
                if self.training and torch.is_grad_enabled():
                    # keep the projector in the graph of text-only batches (DDP needs every
                    # trainable weight to get a gradient each step); adds exactly zero
                    out = out + 0.0 * self.project(input_ids.new_zeros(1)).sum().to(out.dtype)
                return out
            out = self.embed(input_ids.masked_fill(is_item, 0))
            vectors = self.project(input_ids[is_item] - ITEM_TOKEN_BASE).to(out.dtype)
            return out.masked_scatter(is_item.unsqueeze(-1), vectors)

    return HybridEmbedding


def install_hybrid_embedding(model: Any, projector: Any, item_table: Any) -> Any:
    """Wrap the input embedding of ``model`` (a peft model or a plain HF model) in a
    :class:`HybridEmbedding`; returns the wrapper. The projector moves to the model's device."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embed = base.get_input_embeddings()
    if isinstance(embed, _hybrid_class()):
        embed = embed.embed
    device = embed.weight.device
    hybrid = _hybrid_class()(embed, projector.to(device), item_table.to(device))
    base.set_input_embeddings(hybrid)
    return hybrid


# --------------------------------------------------------------------------- curriculum


def uses_hybrid(step: int, total_steps: int, seed: int) -> bool:
    """Whether optimizer step ``step`` (0-based) of ``total_steps`` trains on hybrid prompts:
    a seeded draw per step, true with probability ``step / total_steps`` (LLaRA's curriculum)."""
    if total_steps <= 0:
        return True
    p = min(1.0, max(0.0, step / total_steps))
    return bool(np.random.default_rng([seed, CURRICULUM_STREAM, step]).random() < p)


def curriculum_counts(total_steps: int, seed: int) -> dict[str, int]:
    hybrid = sum(uses_hybrid(s, total_steps, seed) for s in range(total_steps))
    return {"hybrid_steps": hybrid, "text_steps": total_steps - hybrid}


def select_curriculum_inputs(seed: int) -> Any:
    """``TrainingHooks.select_inputs``: keep the hybrid batch or swap in the text-only one."""

    def select(inputs: dict[str, Any], step: int, total_steps: int) -> dict[str, Any]:
        text = {k[len(TEXT_PREFIX):]: v for k, v in inputs.items() if k.startswith(TEXT_PREFIX)}
        if uses_hybrid(step, total_steps, seed) or not text:
            return {k: v for k, v in inputs.items() if not k.startswith(TEXT_PREFIX)}
        return text

    return select


class CurriculumCollator:
    """Both encodings of a batch: the hybrid one under the usual keys, the text-only one
    under ``text_*`` keys (the training loop keeps one of them)."""

    def __init__(self, pad_token_id: int, answer_window: bool):
        self.base = AnswerOnlyCollator(pad_token_id, answer_window=answer_window)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        hybrid = self.base([{"input_ids": f["input_ids"], "prompt_len": f["prompt_len"]} for f in features])
        text = self.base([{"input_ids": f["text_ids"], "prompt_len": f["text_prompt_len"]} for f in features])
        return {**hybrid, **{TEXT_PREFIX + k: v for k, v in text.items()}}


# --------------------------------------------------------------------------- training


def training_features(dataset: SplitDataset, tokenizer: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """Per training sample (the first ``max_samples``): hybrid prompt + answer ids and the
    text-only prompt + answer ids, with their prompt lengths (templates as ``tallrec``)."""
    from .tallrec import sample_templates

    samples = dataset.train[: config.max_samples] if config.max_samples else dataset.train
    templates = sample_templates(len(samples), config)
    prompts = [sample_hybrid_prompt(s, dataset.catalog, template=t) for s, t in zip(samples, templates, strict=True)]
    hybrid = hybrid_prompt_ids(tokenizer, prompts)
    features = []
    for s, ids in zip(samples, hybrid, strict=True):
        answer = answer_ids(tokenizer, answer_text(dataset.catalog.titles[s.target]))
        text = [t for t in ids if t < ITEM_TOKEN_BASE]
        features.append({"input_ids": tuple(ids + answer), "prompt_len": len(ids),
                         "text_ids": tuple(text + answer), "text_prompt_len": len(text)})
    return features


def train_victim(
    data: str | os.PathLike | SplitDataset,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    force: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    save_steps: int = 10,
) -> Path:
    """Train the ``llara`` victim on the train split of ``data`` and write it to ``out``:
    SASRec first (``config.sasrec_epochs``, same samples and seed; every process trains the
    same one, deterministically), then LoRA + projector with the curriculum.
    ``checkpoint_dir``: as ``tallrec`` (the projector is saved in each checkpoint)."""
    from .tallrec import run_record, save_run
    from .training_data import load_training_data

    config = config or TrainConfig()
    out = check_output_dir(out, force)
    dataset, data_info = load_training_data(data)
    if config.item_model is not None:
        rec, sconfig, rec_summary, rec_log = pretrained_item_model(config.item_model, len(dataset.catalog))
    else:
        sconfig = sasrec_victim.SASRecConfig(epochs=config.sasrec_epochs, max_samples=config.max_samples,
                                             seed=config.seed)
        rec, rec_summary, rec_log = sasrec_victim.train_sasrec(dataset, sconfig)
    table = rec.item_embeddings.detach().clone()

    model, tokenizer = load_backbone(config.backbone, dtype=weights_and_autocast(config)[0])
    features = training_features(dataset, tokenizer, config)
    window = config.answer_logits_only and supports_answer_window(model)
    projector = make_projector(table.shape[1], model.config.hidden_size, config.seed)
    hooks = TrainingHooks(
        after_lora=lambda peft_model: install_hybrid_embedding(peft_model, projector, table),
        collator=CurriculumCollator(int(tokenizer.pad_token_id), window),
        select_inputs=select_curriculum_inputs(config.seed),
        extra_state={PROJECTOR: projector},
    )
    result = train_lora(
        model, tokenizer, features, config, hooks=hooks,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir), save_steps=save_steps,
    )
    if result.is_main_process:
        info, timing = run_record(config, dataset, data_info, [len(f["input_ids"]) for f in features], result)
        info.update({
            "victim": VICTIM,
            "format_version": FORMAT_VERSION,
            "sasrec": sconfig.model_dump(mode="json"),
            "projector": {"in": int(table.shape[1]), "hidden": int(model.config.hidden_size),
                          "layers": "Linear-GELU-Linear"},
            "curriculum": curriculum_counts(result.steps, config.seed),
            "sasrec_valid_HR@1": rec_summary["valid_HR@1"],
        })
        timing.update({
            "train_seconds": round(result.seconds + rec_summary["seconds"], 2),
            "lora_seconds": round(result.seconds, 2),
            "sasrec_seconds": rec_summary["seconds"],
        })
        rec_info = {
            "format_version": sasrec_victim.FORMAT_VERSION, "victim": sasrec_victim.VICTIM, "backbone": None,
            "sasrec": sconfig.model_dump(mode="json"), "n_items": rec_summary["n_items"],
            "dataset": info["dataset"], "train_samples": rec_summary["train_samples"],
            "steps": rec_summary["steps"], "best_epoch": rec_summary["best_epoch"],
            "valid_HR@1": rec_summary["valid_HR@1"],
        }
        with atomic_output_dir(out, force=force) as tmp:
            save_run(tmp, result, info, timing)
            save_modules({PROJECTOR: projector}, tmp)
            (tmp / "sasrec").mkdir()
            sasrec_victim.save_sasrec(rec, tmp / "sasrec")
            write_json(tmp / "sasrec" / "victim.json", rec_info)
            (tmp / "sasrec" / "training_log.jsonl").write_text(log_lines(rec_log), encoding="utf-8")
    result.accelerator.wait_for_everyone()
    return out


def pretrained_item_model(folder: str | os.PathLike, n_items: int) -> tuple[Any, Any, dict[str, Any], list[Any]]:
    """(SASRec, its config, summary, per-epoch log) of a trained ``sasrec`` victim folder, to
    take its item embeddings instead of training SASRec on the LoRA's samples."""
    import json

    path = Path(folder)
    if not (path / "victim.json").is_file():
        raise RecBackdoorError(f"{path}: not a sasrec victim folder (no victim.json); train one with "
                               "`recbackdoor train --victim sasrec`")
    rec, info = sasrec_victim.load_sasrec(path)
    if int(info["n_items"]) != n_items:
        raise RecBackdoorError(f"{path}: SASRec of {info['n_items']} items, the dataset's catalog has {n_items}; "
                               "train it on the same dataset")
    log_path = path / "training_log.jsonl"
    log = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()] if log_path.is_file() else []
    summary = {"n_items": n_items, "train_samples": info["train_samples"], "steps": info["steps"],
               "best_epoch": info["best_epoch"], "valid_HR@1": info["valid_HR@1"], "seconds": 0.0}
    return rec, sasrec_victim.SASRecConfig(**info["sasrec"]), summary, log


def load_victim(
    model_dir: str | os.PathLike,
    *,
    dtype: Any = None,
    device: Any = None,
    merge: bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, info)`` in eval mode: backbone + adapter (merged with ``merge``),
    its input embedding wrapped with the saved projector and SASRec's E. Feed it
    :class:`~recbackdoor.models.prompts.HybridPrompt` prompts."""
    from peft import PeftModel

    path = Path(model_dir)
    info = read_json(path / "victim.json")
    if info.get("victim") != VICTIM:
        raise RecBackdoorError(f"{path}: victim {info.get('victim')!r} cannot be loaded by the llara loader")
    for need in ("adapter/adapter_config.json", f"{PROJECTOR}.safetensors", "sasrec/victim.json"):
        if not (path / need).is_file():
            raise RecBackdoorError(f"{path}/{need}: missing; retrain with `recbackdoor train --victim llara`")
    rec, _ = sasrec_victim.load_sasrec(path / "sasrec")
    table = rec.item_embeddings.detach().clone()
    model, tokenizer = load_backbone(info["backbone"], dtype=dtype, device=device)
    with quiet_peft():
        model = PeftModel.from_pretrained(model, path / "adapter", is_trainable=False)
    if merge:
        model = model.merge_and_unload()
    projector = make_projector(table.shape[1], model.config.hidden_size, 0)
    load_modules({PROJECTOR: projector}, path)
    install_hybrid_embedding(model, projector, table)
    model.eval()
    return model, tokenizer, {**info, "dir": str(path)}
