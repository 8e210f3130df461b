"""Policy optimisation of the scanner and the agent (docs/design.md §5), on the package's one training
stack: the Hugging Face ``Trainer`` of ``models/lora.py`` and TRL's trainers built on it.

- ``add_lora``: the victims' ``attach_lora`` with the scanner's adapter settings.
- ``sft_yes_no``: supervised cross-entropy on the answer token (" Yes"/" No") after the
  scanner prompt, through ``models.lora.train_adapter`` (answer-only loss, left padding with
  position ids, so the loss reads the same last-position logits that scoring reads).
- ``dpo_train``: TRL's DPOTrainer on a LoRA model (the reward step): for the scanner, chosen =
  the correct verdict, rejected = the wrong one (reward +1 / -1); for the agent, chosen = a
  trigger that evaded the scanner, rejected = one that was caught. With a PEFT model TRL uses a
  frozen copy of the current adapter ("ref") as the reference policy; it is removed afterwards
  so the saved scanner has one adapter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def add_lora(
    model: Any, r: int = 8, alpha: int = 16, dropout: float = 0.0, seed: int = 0, top_fraction: float = 1.0
) -> Any:
    """Wrap ``model`` with a fresh LoRA adapter on its attention and MLP projections; only the
    adapter trains. ``top_fraction`` < 1 puts it on the upper layers only (see
    ``models.lora.attach_lora``)."""
    from ...models.lora import TrainConfig, attach_lora

    config = TrainConfig(lora_r=r, lora_alpha=alpha, lora_dropout=dropout, seed=seed)
    return attach_lora(model, config, top_fraction=top_fraction)


ANSWER_PAIRS = ((" Yes", " No"), ("Yes", "No"), (" yes", " no"), ("yes", "no"))


def answer_strings(tokenizer: Any) -> tuple[str, str, int, int]:
    """The Yes/No answer strings and the token ids the score reads: the first pair that the
    tokenizer encodes as one token each (" Yes"/" No" for most), else the first pair whose
    first tokens differ (a small tokenizer may split " Yes" into " " + "Y" + "es")."""
    fallback = None
    for yes_s, no_s in ANSWER_PAIRS:
        yes = tokenizer.encode(yes_s, add_special_tokens=False)
        no = tokenizer.encode(no_s, add_special_tokens=False)
        if not yes or not no or yes[0] == no[0]:
            continue
        if len(yes) == 1 and len(no) == 1:
            return yes_s, no_s, yes[0], no[0]
        fallback = fallback or (yes_s, no_s, yes[0], no[0])
    if fallback is None:
        raise ValueError("the tokenizer cannot tell Yes from No by their first token")
    return fallback


def answer_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of the Yes and No answers (see ``answer_strings``)."""
    return answer_strings(tokenizer)[2:]


def encode_left(tokenizer: Any, prompts: Sequence[str], device: Any = None) -> dict[str, Any]:
    """Left-padded batch with position ids that skip the padding (so a title's score does not
    depend on the other titles in its batch)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    enc["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    if device is not None:
        enc = {k: v.to(device) for k, v in enc.items()}
    return dict(enc)


def last_logits(model: Any, batch: dict[str, Any]) -> Any:
    """Next-token logits at the answer position (the last prompt token), one forward pass."""
    out = model(**batch, logits_to_keep=1)
    return out.logits[:, -1, :]


def sft_yes_no(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    labels: Sequence[int],
    *,
    lr: float = 5e-4,
    epochs: int = 1,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    desc: str = "scanner sft",
) -> dict[str, float]:
    """Cross-entropy on the answer token (linear decay of the learning rate, gradients clipped
    at norm 1); returns the mean loss of the first and last quarter of the steps."""
    from ...models.lora import Example, TrainConfig, train_adapter

    yes, no = answer_ids(tokenizer)
    weights = next(model.parameters()).dtype
    examples = []
    for prompt, label in zip(prompts, labels, strict=True):
        ids = list(tokenizer(prompt)["input_ids"])
        examples.append(Example(tuple(ids + [yes if label else no]), len(ids)))
    config = TrainConfig(
        dtype="bf16" if str(weights) == "torch.bfloat16" else "fp32",  # as loaded: no autocast
        lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
        scheduler="linear", warmup_ratio=0.0, logging_steps=1,
        # full-width logits, right padding: what every scanner measured in the README was
        # trained with (the answer window is the same loss, faster; not re-measured yet)
        answer_logits_only=False,
    )  # fmt: skip
    result = train_adapter(model, tokenizer, examples, config, desc=desc, progress=progress, data_seed=seed)
    model.eval()
    losses = [row["loss"] for row in result.log]
    q = max(1, len(losses) // 4)
    return {"loss_first": float(np.mean(losses[:q])), "loss_last": float(np.mean(losses[-q:])), "steps": result.steps}


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the Trainer's per-run chatter (logging and warnings), not errors."""
    from datasets.utils import logging as ds_logging

    loggers = [logging.getLogger(n) for n in ("transformers", "trl", "accelerate", "datasets")]
    levels = [lg.level for lg in loggers]
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
        if bars:
            ds_logging.enable_progress_bar()


def policy_options(model: Any, seed: int, progress: bool, **overrides: Any) -> dict[str, Any]:
    """The arguments the scanner's TRL runs (DPO, GRPO) share on top of ``trainer_options``:
    data order seeded, nothing saved, no gradient checkpointing (TRL's GRPO default is on),
    bf16 only on a CUDA device that has it (TRL's GRPO default is bf16 even on a CPU), a
    constant learning rate."""
    import torch

    from ...models.lora import trainer_options

    cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
    options = dict(
        data_seed=seed, save_strategy="no", gradient_checkpointing=False,
        bf16=bool(cuda and torch.cuda.is_bf16_supported()), fp16=False, disable_tqdm=not progress,
        lr_scheduler_type="constant", warmup_steps=0,
    )  # fmt: skip
    return trainer_options(seed, **{**options, **overrides})


def dpo_train(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, str]],
    *,
    seed: int = 0,
    lr: float = 5e-5,
    beta: float = 0.1,
    batch_size: int = 8,
    epochs: int = 1,
    progress: bool = False,
) -> dict[str, float]:
    """One DPO pass (TRL DPOTrainer) over ``rows`` of prompt/chosen/rejected on the LoRA model
    ``model`` (its current adapter is the reference); returns the final training loss."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    padding_side = tokenizer.padding_side
    with tempfile.TemporaryDirectory(prefix="pscanner-dpo-") as tmp, _quiet():
        args = DPOConfig(
            **policy_options(
                model, seed, progress,
                output_dir=tmp, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                learning_rate=lr, beta=beta, logging_strategy="no", dataset_num_proc=None, max_length=256,
            )  # fmt: skip
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(list(rows)),
            processing_class=tokenizer,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            result = trainer.train()
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    model.set_adapter("default")
    model.eval()
    tokenizer.padding_side = padding_side
    return {"dpo_loss": float(result.training_loss), "dpo_steps": int(result.global_step)}


def verdict_rows(tokenizer: Any, prompts: Sequence[str], labels: Sequence[int]) -> list[dict[str, str]]:
    """DPO rows for the scanner: reward +1 for the correct verdict, -1 for the wrong one, so
    chosen = correct answer, rejected = wrong answer."""
    yes, no, _, _ = answer_strings(tokenizer)
    return [
        {"prompt": p, "chosen": yes if y else no, "rejected": no if y else yes}
        for p, y in zip(prompts, labels, strict=True)
    ]
