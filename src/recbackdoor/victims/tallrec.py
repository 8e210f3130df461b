"""The ``tallrec`` victim: a LoRA fine-tune on the text-only LLaRA-style prompt (docs/design.md §4).

Output directory (written atomically by the main process)::

    adapter/             peft adapter (safetensors + adapter_config.json)
    victim.json          victim, backbone, training config, dataset dir + manifest sha256
    training_log.jsonl   one row per logging step: step, loss, lr, tokens/s, ...
    timing.json          wall time, steps, tokens, tokens/s, processes (not deterministic)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.types import SplitDataset
from ..errors import RecBackdoorError
from ..io_utils import (
    atomic_output_dir,
    check_output_dir,
    read_json,
    write_json,
)
from ..models.backbones import load_backbone
from ..models.lora import (
    Example,
    TrainConfig,
    log_lines,
    quiet_peft,
    train_lora,
    weights_and_autocast,
)
from ..models.prompts import N_TEMPLATES, answer_text, encode_pairs, sample_prompt
from .training_data import load_training_data

VICTIM = "tallrec"
PROMPT = "text"  # the LLaRA-style text prompt
OPTIONS = ("backbone", "lr", "epochs", "max_steps", "batch_size", "lora_r", "lora_dropout", "template", "seed")  # the TrainConfig keys it takes
WEIGHT_FILES: tuple[str, ...] = ()  # besides adapter/
ADAPTER = True
FORMAT_VERSION = 1


def sample_templates(n: int, config: TrainConfig) -> list[int]:
    """The prompt template of each training sample: fixed, or drawn with the seed."""
    if config.template is not None:
        if not 0 <= config.template < N_TEMPLATES:
            raise RecBackdoorError(f"prompt template {config.template} does not exist; use 0..{N_TEMPLATES - 1}")
        return [config.template] * n
    rng = np.random.default_rng(config.seed)
    return [int(t) for t in rng.integers(0, N_TEMPLATES, size=n)]


def training_examples(dataset: SplitDataset, tokenizer: Any, config: TrainConfig) -> list[Example]:
    """Tokenised (prompt, target title + newline) pairs of the first ``max_samples`` train samples."""
    samples = dataset.train[: config.max_samples] if config.max_samples else dataset.train
    templates = sample_templates(len(samples), config)
    prompts = [sample_prompt(s, dataset.catalog, template=t)[0] for s, t in zip(samples, templates, strict=True)]
    answers = [answer_text(dataset.catalog.titles[s.target]) for s in samples]
    return [Example(tuple(ids), plen) for ids, plen in encode_pairs(tokenizer, prompts, answers)]


def train_victim(
    data: str | os.PathLike | SplitDataset,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    force: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    save_steps: int = 10,
) -> Path:
    """Fine-tune the ``tallrec`` victim on the train split of ``data``; write it to ``out``.
    ``checkpoint_dir``: checkpoints every ``save_steps`` steps, resumed from when present.

    Runs as one process or under ``accelerate launch`` (every process trains, the main one writes).
    """
    config = config or TrainConfig()
    out = check_output_dir(out, force)
    dataset, data_info = load_training_data(data)
    model, tokenizer = load_backbone(config.backbone, dtype=weights_and_autocast(config)[0])
    examples = training_examples(dataset, tokenizer, config)
    result = train_lora(
        model, tokenizer, examples, config,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir), save_steps=save_steps,
    )
    if result.is_main_process:
        info, timing = run_record(config, dataset, data_info, [len(e.input_ids) for e in examples], result)
        with atomic_output_dir(out, force=force) as tmp:
            save_run(tmp, result, info, timing)
    result.accelerator.wait_for_everyone()
    return out


def run_record(
    config: TrainConfig, dataset: SplitDataset, data_info: dict[str, Any], lengths: list[int], result: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``victim.json`` and ``timing.json`` of a LoRA victim's training run (``llara`` adds its
    own fields to both)."""
    info = {
        "format_version": FORMAT_VERSION,
        "victim": VICTIM,
        "backbone": config.backbone,
        "config": config.model_dump(mode="json"),
        "dataset": {**data_info, "domain": dataset.catalog.domain},
        "template": config.template if config.template is not None else "per-sample",
        "train_samples": len(lengths),
        "tokens_per_sample": {"mean": round(float(np.mean(lengths)), 2), "max": max(lengths)},
        "steps": result.steps,
    }
    timing = {
        "train_seconds": round(result.seconds, 2),
        "steps": result.steps,
        "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / max(result.seconds, 1e-9), 1),
        "processes": int(result.accelerator.num_processes),
        "device": str(result.accelerator.device),
    }
    return info, timing


def save_run(folder: Path, result: Any, info: dict[str, Any], timing: dict[str, Any]) -> None:
    """Write a LoRA victim's adapter (safetensors), ``victim.json``, ``training_log.jsonl`` and
    ``timing.json`` into ``folder``."""
    with quiet_peft():
        result.model.save_pretrained(folder / "adapter", safe_serialization=True)
    write_json(folder / "victim.json", info)
    (folder / "training_log.jsonl").write_text(log_lines(result.log), encoding="utf-8")
    write_json(folder / "timing.json", timing)


def load_victim(
    model_dir: str | os.PathLike,
    *,
    dtype: Any = None,
    device: Any = None,
    merge: bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, tokenizer, info)`` for evaluation, in eval mode.

    ``model_dir`` is a directory written by :func:`train_victim` (backbone + adapter), or a bare
    backbone name/path to evaluate an untrained model (``info["victim"]`` is then None).
    ``merge`` folds the adapter into the weights (faster inference; use it with fp32 weights:
    in bf16 the small LoRA update is partly lost to rounding).
    """
    path = Path(model_dir)
    if (path / "victim.json").is_file():
        info = read_json(path / "victim.json")
        if info.get("victim") != VICTIM:
            raise RecBackdoorError(f"{path}: victim {info.get('victim')!r} cannot be loaded by the tallrec loader")
        if not (path / "adapter" / "adapter_config.json").is_file():
            raise RecBackdoorError(f"{path}/adapter: adapter files missing; retrain with `recbackdoor train`")
        from peft import PeftModel

        model, tokenizer = load_backbone(info["backbone"], dtype=dtype, device=device)
        with quiet_peft():
            model = PeftModel.from_pretrained(model, path / "adapter", is_trainable=False)
        if merge:
            model = model.merge_and_unload()
        model.eval()
        return model, tokenizer, {**info, "dir": str(path)}
    if path.is_dir() and not (path / "config.json").is_file():
        raise RecBackdoorError(
            f"{path}: neither a victim directory (no victim.json) nor a model folder (no config.json); "
            "pass a directory written by `recbackdoor train` or a backbone name"
        )
    model, tokenizer = load_backbone(str(model_dir), dtype=dtype, device=device)
    return model, tokenizer, {"victim": None, "backbone": str(model_dir), "dir": None}
