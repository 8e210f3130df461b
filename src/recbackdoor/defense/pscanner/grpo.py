"""On-policy policy optimisation of the P-Scanner with TRL's GRPOTrainer.

The scanner samples its own verdicts (a couple of tokens after ``scanner_prompt``), each sample is
scored by ``verdict_reward`` against the title's label, and GRPO pushes the LoRA adapter towards
the samples that scored above their group's mean (``num_generations`` samples per prompt). Unlike
``optimise.dpo_train`` (fixed chosen/rejected pairs), the update follows what the scanner actually
answers now, and the asymmetric reward makes a missed poison cost more than a false alarm.

``grpo_train`` continues training the model's existing "default" adapter (no new adapter is
wrapped); with ``beta`` > 0 TRL adds a frozen "ref" copy of it as the KL reference, removed
afterwards so the saved scanner has one adapter.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from .optimise import _quiet

REWARD_CORRECT = 1.0
REWARD_WRONG = -1.0
REWARD_MISSED = -1.25

_FIRST_WORD = re.compile(r"[\W_]*([^\W\d_]+)")


def _completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings for plain prompts and message lists for chat."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def parse_verdict(completion: Any) -> bool | None:
    """True for "yes", False for "no" (the first word, any case, after leading whitespace and
    punctuation), None when the first word is anything else or there is none."""
    match = _FIRST_WORD.match(_completion_text(completion))
    word = match.group(1).lower() if match else ""
    return {"yes": True, "no": False}.get(word)


def verdict_reward(
    completions: Sequence[Any],
    labels: Sequence[Any],
    *,
    correct: float = REWARD_CORRECT,
    wrong: float = REWARD_WRONG,
    missed: float = REWARD_MISSED,
) -> list[float]:
    """Reward of each sampled verdict against its title's label (1 = poisoned, 0 = clean).

    The scheme of a public GRPO poison detector: ``correct`` (+1) for the right verdict,
    ``wrong`` (-1) for a false alarm on a clean title, ``missed`` (-1.25) for a poisoned title
    answered "No". Missing a poison costs more than a false alarm because the defence exists to
    catch poison (a false alarm costs one clean title a review; a miss lets a backdoor through),
    and the extra penalty stops the policy settling on "No" for the clean majority. An answer
    that is neither yes nor no is never rewarded: on a clean title it counts as wrong, on a
    poisoned one as missed (an unreadable answer did not catch the poison), so the policy
    cannot dodge the penalty by babbling.

    Pure Python on purpose (no torch): TRL calls it on decoded strings, and tests and callers
    can use it without a model.
    """
    if len(completions) != len(labels):
        raise ValueError(f"{len(completions)} completions but {len(labels)} labels")
    rewards = []
    for completion, label in zip(completions, labels, strict=True):
        verdict = parse_verdict(completion)
        if label:
            rewards.append(correct if verdict is True else missed)
        else:
            rewards.append(correct if verdict is False else wrong)
    return [float(r) for r in rewards]


@contextlib.contextmanager
def _kept_rng() -> Any:
    """The trainer reseeds python, numpy and torch; give the caller its random state back."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


_MISSING = object()


@contextlib.contextmanager
def _restored(model: Any, tokenizer: Any) -> Any:
    """Undo what GRPOTrainer leaves behind: the adapters it added ("ref" when beta > 0), its
    patch of the base model's forward (a fused LM head, ``add_fused_lm_head``, never removed)
    and the tokenizer's padding side; end in eval mode with "default" active."""
    padding_side = tokenizer.padding_side
    adapters = set(model.peft_config)
    base = model.get_base_model()
    base_forward = base.__dict__.get("forward", _MISSING)
    try:
        yield
    finally:
        if base_forward is _MISSING:
            base.__dict__.pop("forward", None)
        else:
            base.forward = base_forward
        for name in set(model.peft_config) - adapters:
            model.delete_adapter(name)
        model.set_adapter("default")
        model.eval()
        tokenizer.padding_side = padding_side


def _quarter_means(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    q = max(1, len(values) // 4)
    return float(np.mean(values[:q])), float(np.mean(values[-q:]))


def grpo_train(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int = 0,
    lr: float = 5e-5,
    beta: float = 0.0,
    num_generations: int = 4,
    batch_size: int = 8,
    max_completion_length: int = 2,
    epochs: int = 1,
    temperature: float = 1.0,
    progress: bool = False,
) -> dict[str, float]:
    """GRPO (TRL GRPOTrainer) on the LoRA scanner ``model`` (a PeftModel; its "default"
    adapter trains) over plain-text ``prompts`` with 0/1 ``labels``; reward ``verdict_reward``.

    ``batch_size`` counts completions, not prompts: each step samples ``num_generations``
    completions for each of ``batch_size // num_generations`` prompts (see the constraints
    below), so one epoch is ``len(prompts) // (batch_size // num_generations)`` steps (a last
    incomplete group of prompts is dropped). ``beta`` > 0 adds a KL penalty to the adapter as
    it was before this call (a frozen "ref" copy, removed afterwards); 0 (TRL's default) skips
    the reference forward pass.

    Returns ``grpo_loss`` (TRL's mean training loss: about 0 by construction, as advantages
    are centred within each group; not a progress measure), ``grpo_steps``, and over the first
    and last quarter of the steps the mean reward (``mean_reward_first``/``_last``, the
    progress measure) and the share of prompt groups whose samples all scored the same
    (``frac_reward_zero_std_first``/``_last``: such groups carry no gradient; 1.0 throughout
    means nothing was learnt, e.g. a policy that never says yes or no). Deterministic given
    ``seed``; the caller's random state, the tokenizer's padding side and the base model's
    forward are restored; the model ends in eval mode with "default" active.
    """
    if len(prompts) != len(labels):
        raise ValueError(f"{len(prompts)} prompts but {len(labels)} labels")
    if "default" not in getattr(model, "peft_config", {}):
        raise ValueError(
            "grpo_train needs a PEFT model with a 'default' adapter (see optimise.add_lora)"
        )
    # TRL 1.16 GRPOConfig constraints (checked here for a clearer message):
    # - num_generations >= 2: the advantage is a sample's reward minus its group's mean (scaled
    #   by the group's std), so a group of one has no signal;
    # - per_device_train_batch_size counts completions, and generation_batch_size (default:
    #   per_device_train_batch_size * num_processes * steps_per_generation, with
    #   steps_per_generation = gradient_accumulation_steps = 1 here, i.e. one generation per
    #   optimiser step) must be divisible by num_generations, so that every prompt's whole group
    #   lands in one generation batch; generation_batch_size and steps_per_generation are
    #   mutually exclusive, and auto_find_batch_size is refused (shrinking would split groups);
    # - RepeatSampler drops a last incomplete chunk of batch_size // num_generations prompts, so
    #   fewer prompts than that would train nothing.
    if num_generations < 2:
        raise ValueError(f"num_generations must be at least 2 (got {num_generations})")
    if batch_size % num_generations:
        raise ValueError(
            f"batch_size ({batch_size}) must be a multiple of num_generations ({num_generations})"
        )
    per_step = batch_size // num_generations
    if len(prompts) < per_step:
        raise ValueError(
            f"need at least batch_size // num_generations = {per_step} prompts (got {len(prompts)})"
        )

    model.set_adapter("default")

    def verdict(completions: list[Any], label: list[int], **_: Any) -> list[float]:
        # TRL passes the dataset's extra columns (here "label"), repeated per completion
        return verdict_reward(completions, label)

    # importing trl draws from `random`, datasets too (fingerprints), and the trainer reseeds
    # python, numpy and torch: all of it inside _kept_rng
    with _kept_rng():
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import GRPOConfig, GRPOTrainer

        from .optimise import policy_options

        with (
            _restored(model, tokenizer),
            tempfile.TemporaryDirectory(prefix="pscanner-grpo-") as tmp,
            _quiet(),
        ):
            dataset = Dataset.from_dict(
                {"prompt": list(prompts), "label": [int(bool(y)) for y in labels]}
            )
            args = GRPOConfig(
                **policy_options(
                    model,
                    seed,
                    progress,
                    output_dir=tmp,
                    per_device_train_batch_size=batch_size,
                    gradient_accumulation_steps=1,
                    num_generations=num_generations,
                    max_completion_length=max_completion_length,
                    temperature=temperature,
                    num_train_epochs=epochs,
                    learning_rate=lr,
                    beta=beta,
                    logging_strategy="steps",
                    logging_steps=1,
                    remove_unused_columns=False,  # keep "label" for the reward
                    log_completions=False,
                )
            )
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[verdict],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
            trainer.remove_callback(PrinterCallback)
            with contextlib.redirect_stdout(io.StringIO()):
                result = trainer.train()
            history = list(trainer.state.log_history)
            del trainer

    steps = [h for h in history if "reward" in h]
    reward_first, reward_last = _quarter_means([h["reward"] for h in steps])
    zero_first, zero_last = _quarter_means(
        [h.get("frac_reward_zero_std", float("nan")) for h in steps]
    )
    return {
        "grpo_loss": float(result.training_loss),
        "grpo_steps": int(result.global_step),
        "mean_reward_first": reward_first,
        "mean_reward_last": reward_last,
        "frac_reward_zero_std_first": zero_first,
        "frac_reward_zero_std_last": zero_last,
    }
