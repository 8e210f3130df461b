"""LoRA fine-tuning of a causal LM on (prompt, answer) pairs with the loss on the answer only.

Generic part shared by the victims: the training configuration, the LoRA adapter, the
answer-only collator, and a Hugging Face ``Trainer`` run with a progress bar and a step log.
The ``Trainer`` runs on CPU or GPU and under ``accelerate launch`` (DDP and friends) with no
distributed code of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError

IGNORE_INDEX = -100
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    """Everything that decides a training run (recorded in ``victim.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = "smollm2-135m"
    # auto: fp32 weights with bf16 autocast where bf16 is native (else plain fp32);
    # bf16: bf16 weights, no autocast; fp32: fp32 throughout. See weights_and_autocast().
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    # auto: eager attention on CPU (about 20% faster than SDPA there for ~170-token prompts),
    # the model's default elsewhere.
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # overrides epochs when set
    batch_size: int = Field(8, gt=0)  # per device
    grad_accum: int = Field(1, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    answer_logits_only: bool = True  # LM head on the answer positions only (same loss, faster)
    seed: int = 0
    max_samples: int | None = Field(None, gt=0)  # the first N training samples
    group_by_length: bool = True  # batches of similar length: less padding
    template: int | None = None  # prompt template; None: one per sample, drawn with the seed
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(32, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: tuple[str, ...] = LORA_TARGETS
    logging_steps: int = Field(1, gt=0)
    # epochs of SASRec: the sasrec victim's default, and the llara victim's item-embedding model
    sasrec_epochs: float = Field(50, gt=0)
    # llara: a trained sasrec victim folder whose item embeddings to use (None: train SASRec on
    # the same samples first). LLaRA's own setup: SASRec pretrained on every interaction.
    item_model: str | None = None


def make_train_config(**options: Any) -> TrainConfig:
    """Build a :class:`TrainConfig`, turning validation errors into one ConfigError line;
    options whose value is None keep their default."""
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return TrainConfig(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "config"
        raise ConfigError(f"training option {where}: {err['msg']} (got {err.get('input')!r})") from None


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One tokenised training pair: ``input_ids`` = prompt ids + answer ids."""

    input_ids: tuple[int, ...]
    prompt_len: int


class ExampleDataset:
    """A map-style dataset of :class:`Example` items as dicts (what ``Trainer`` expects)."""

    def __init__(self, examples: Sequence[Example]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        return {"input_ids": ex.input_ids, "prompt_len": ex.prompt_len}


@dataclass
class AnswerOnlyCollator:
    """Pads a batch; labels are the input ids with -100 on the prompt and the padding, so the
    loss covers the answer tokens only (masked by prompt length).

    ``answer_window=False``: right padding, full-width labels. ``answer_window=True``: left
    padding (with explicit position ids), and only the last K positions, which hold every
    answer and the token before it, go through the LM head (``logits_to_keep=K``; labels are
    those K columns). The loss is the same; the vocabulary projection and its softmax, about
    a fifth of a small model's work, shrink to the answer tokens.
    """

    pad_token_id: int
    answer_window: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(features), width), dtype=torch.long)
        keep = 1
        for row, feat in enumerate(features):
            seq = torch.as_tensor(feat["input_ids"], dtype=torch.long)
            n, p = len(seq), int(feat["prompt_len"])
            start = width - n if self.answer_window else 0
            ids[row, start : start + n] = seq
            mask[row, start : start + n] = 1
            labels[row, start + p : start + n] = seq[p:]
            positions[row, start : start + n] = torch.arange(n)
            keep = max(keep, n - p + 1)
        if not self.answer_window:
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}
        keep = min(keep, width)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "labels": labels[:, width - keep :],
            "logits_to_keep": keep,
        }


def supports_answer_window(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` and ``position_ids``."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "logits_to_keep" in params and "position_ids" in params


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when ``batches`` (lists of indices) are right-padded."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if total == 0 else 1.0 - real / total


# --------------------------------------------------------------------------- LoRA


def attach_lora(model: Any, config: TrainConfig, top_fraction: float = 1.0) -> Any:
    """Wrap ``model`` in a peft LoRA adapter (seeded init); only the adapter trains.
    ``top_fraction`` < 1 puts it on the upper layers only, so backpropagation stops there:
    cheaper steps on a CPU, the lower layers' features kept (the P-Scanner's choice)."""
    import torch
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in present]
    if missing:
        raise ConfigError(
            f"LoRA target modules {missing} not found in backbone {config.backbone!r}; "
            "set target_modules to the names of its linear layers"
        )
    if not 0 < top_fraction <= 1:
        raise ConfigError(f"LoRA top_fraction must be in (0, 1], got {top_fraction}")
    layers: dict[str, Any] = {}
    n_layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    if top_fraction < 1 and n_layers:
        first = n_layers - max(1, int(round(top_fraction * n_layers)))
        layers = {"layers_to_transform": list(range(first, n_layers)), "layers_pattern": "layers"}
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        **layers,
    )
    with torch.random.fork_rng(devices=[]), quiet_peft():
        torch.manual_seed(config.seed)
        return get_peft_model(model, lora)


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence a transformers deprecation that peft triggers on wrapping (not actionable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


# --------------------------------------------------------------------------- Trainer


@dataclass
class TrainingHooks:
    """What a victim adds to the generic LoRA run (the ``llara`` victim uses all of them).

    - ``after_lora(peft_model)``: called once the adapter is attached (peft has frozen every
      other weight by then), e.g. to install extra trainable modules.
    - ``collator``: replaces the answer-only collator.
    - ``select_inputs(inputs, step, total_steps)``: called on every batch inside the training
      loop with the optimizer step and the run's total steps; returns the model's inputs
      (e.g. the curriculum's choice between two encodings a collator prepared).
    - ``extra_state``: name -> module whose weights go into every checkpoint
      (``<name>.safetensors``) and are restored on resume, for trainable weights outside the
      adapter.
    """

    after_lora: Callable[[Any], None] | None = None
    collator: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] | None = None
    select_inputs: Callable[[dict[str, Any], int, int], dict[str, Any]] | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)


def _extra_state_callback(extra: dict[str, Any]) -> Any:
    """A TrainerCallback writing ``extra`` modules into each checkpoint folder."""
    from transformers import TrainerCallback

    class SaveExtra(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder):
                save_modules(extra, folder)

    return SaveExtra()


def save_modules(modules: dict[str, Any], folder: str | os.PathLike) -> None:
    """Each module's state dict as ``<folder>/<name>.safetensors`` (atomic per file)."""
    from safetensors.torch import save_file

    for name, module in modules.items():
        path = os.path.join(folder, f"{name}.safetensors")
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, path + ".tmp")
        os.replace(path + ".tmp", path)


def load_modules(modules: dict[str, Any], folder: str | os.PathLike) -> None:
    """Restore what :func:`save_modules` wrote (strict: every tensor present and used)."""
    from safetensors.torch import load_file

    for name, module in modules.items():
        path = os.path.join(folder, f"{name}.safetensors")
        if not os.path.isfile(path):
            raise ConfigError(
                f"{path}: missing from the checkpoint (interrupted while saving?); delete "
                f"{folder} to resume from the previous checkpoint or start over"
            )
        module.load_state_dict(load_file(path), strict=True)


@dataclass
class TrainResult:
    """What a run produced: the adapted model, its log, and timing (main process only)."""

    model: Any
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    tokens: int = 0
    is_main_process: bool = True
    accelerator: Any = None


def _progress_callback(log: list[dict[str, Any]], desc: str = "train", bar: bool = True) -> Any:
    """A TrainerCallback: tqdm bar (``bar``) with loss and tokens/s, and one log row per
    logging step."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None
            self.t0 = self.last_t = 0.0
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = self.last_t = time.perf_counter()
            if state.is_world_process_zero and bar:
                self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", dynamic_ncols=True, leave=desc == "train")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            now = time.perf_counter()
            tokens = int(state.num_input_tokens_seen)
            interval_s, interval_tokens = now - self.last_t, tokens - self.last_tokens
            rate = interval_tokens / max(interval_s, 1e-9)
            self.last_t, self.last_tokens = now, tokens
            row = {
                "step": int(state.global_step),
                "epoch": round(float(state.epoch or 0.0), 4),
                "loss": float(logs["loss"]),
                "lr": float(logs.get("learning_rate", 0.0)),
                "tokens": tokens,
                "tokens_per_s": round(rate, 1),
                "elapsed_s": round(now - self.t0, 3),
                "interval_s": round(interval_s, 3),
                "interval_tokens": interval_tokens,
            }
            log.append(row)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{rate:.0f}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return Progress()


def weights_and_autocast(config: TrainConfig) -> tuple[str, bool]:
    """(dtype to load the weights in, whether to train under bf16 autocast).

    ``auto`` keeps fp32 weights and a fp32 residual stream, and runs the matmuls in bf16 where
    the hardware has it: as fast as bf16 weights on an AVX512-BF16 CPU (measured on
    SmolLM2-135M), more accurate, and the fp32 LoRA weights need no casts of the activations.
    """
    if config.dtype != "auto":
        return config.dtype, False
    import torch

    from .backbones import default_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return "fp32", default_dtype(device) == torch.bfloat16


def _set_attention(model: Any, config: TrainConfig) -> None:
    import torch

    choice = config.attn_implementation
    if choice == "auto":
        if torch.cuda.is_available():
            return
        choice = "eager"
    if getattr(model.config, "_attn_implementation", None) != choice:
        model.set_attn_implementation(choice)


def train_lora(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: TrainConfig,
    callbacks: Sequence[Any] = (),
    checkpoint_dir: str | None = None,
    save_steps: int = 10,
    hooks: TrainingHooks | None = None,
) -> TrainResult:
    """Fine-tune a fresh LoRA adapter on ``examples`` with the HF ``Trainer``; returns the peft
    model. ``callbacks``: extra ``TrainerCallback`` objects (e.g. a benchmark's timers).
    ``checkpoint_dir``: keep a checkpoint there every ``save_steps`` steps (adapter, optimiser,
    scheduler, RNG states) and resume from the last one found, so an interrupted run finishes
    with the same weights as an uninterrupted one.

    Load ``model`` in the dtype of :func:`weights_and_autocast`; the adapter weights stay fp32
    (peft's default). ``hooks``: see :class:`TrainingHooks`.
    """
    from transformers import set_seed

    if not examples:
        raise ConfigError("no training samples: the dataset's train split is empty")
    set_seed(config.seed)
    _set_attention(model, config)
    hooks = hooks or TrainingHooks()
    peft_model = attach_lora(model, config)
    if hooks.after_lora is not None:
        hooks.after_lora(peft_model)
    return train_adapter(peft_model, tokenizer, examples, config, callbacks, checkpoint_dir, save_steps, hooks)


def train_adapter(
    peft_model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    config: TrainConfig,
    callbacks: Sequence[Any] = (),
    checkpoint_dir: str | None = None,
    save_steps: int = 10,
    hooks: TrainingHooks | None = None,
    *,
    desc: str = "train",
    progress: bool = True,
    data_seed: int | None = None,
) -> TrainResult:
    """Go on training the adapter of ``peft_model`` on ``examples`` (answer-only loss) with
    the HF ``Trainer``: the one training loop of the package, used by :func:`train_lora` for
    the victims and by the P-Scanner's supervised steps. Arguments as :func:`train_lora`;
    ``desc`` names the progress bar, ``progress=False`` hides it (the log is kept);
    ``data_seed`` seeds the data order apart from ``config.seed`` (the scanner's steps)."""
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments

    if not examples:
        raise ConfigError("no training examples")
    _, autocast = weights_and_autocast(config)
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    window = config.answer_logits_only and supports_answer_window(base)  # peft's forward hides them
    hooks = hooks or TrainingHooks()
    peft_model.train()
    log: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if checkpoint_dir is None:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="recbackdoor-trainer-"))
        else:
            scratch = str(checkpoint_dir)
        resume = _last_checkpoint(checkpoint_dir)
        if resume is not None and hooks.extra_state:
            load_modules(hooks.extra_state, resume)
        args = TrainingArguments(
            **trainer_options(
                config.seed,
                data_seed=data_seed,
                output_dir=scratch,
                learning_rate=config.lr,
                num_train_epochs=config.epochs,
                max_steps=config.max_steps or -1,
                per_device_train_batch_size=config.batch_size,
                gradient_accumulation_steps=config.grad_accum,
                warmup_steps=config.warmup_ratio,
                lr_scheduler_type=config.scheduler,
                weight_decay=config.weight_decay,
                max_grad_norm=config.max_grad_norm,
                train_sampling_strategy="group_by_length" if config.group_by_length else "random",
                logging_steps=config.logging_steps,
                include_num_input_tokens_seen="non_padding",
                save_strategy="no" if checkpoint_dir is None else "steps",
                save_steps=save_steps,
                save_total_limit=1,
                remove_unused_columns=False,
                label_names=["labels"],
                ddp_find_unused_parameters=False,
                bf16=autocast,
            )
        )
        extra_callbacks = [_extra_state_callback(hooks.extra_state)] if hooks.extra_state else []
        trainer = _trainer_class(hooks.select_inputs)(
            model=peft_model,
            args=args,
            train_dataset=examples if hooks.collator is not None else ExampleDataset(examples),
            data_collator=hooks.collator or AnswerOnlyCollator(int(tokenizer.pad_token_id), answer_window=window),
            callbacks=[_progress_callback(log, desc, progress), *extra_callbacks, *callbacks],
        )
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        t0 = time.perf_counter()
        out = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - t0
    peft_model.eval()
    return TrainResult(
        model=trainer.model,
        log=log,
        seconds=seconds,
        steps=int(out.global_step),
        tokens=int(trainer.state.num_input_tokens_seen),
        is_main_process=trainer.accelerator.is_main_process,
        accelerator=trainer.accelerator,
    )


def trainer_options(seed: int, **overrides: Any) -> dict[str, Any]:
    """The arguments every Trainer run of the package shares (``TrainingArguments`` and TRL's
    ``DPOConfig``/``GRPOConfig`` alike): seeds, no reporting, no tqdm of the Trainer's own (we
    draw ours), the CPU when there is no GPU, one process for data loading. ``data_seed`` is
    the caller's: the victims leave it unset, which keeps their data order as measured."""
    import torch

    options: dict[str, Any] = {
        "seed": seed,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }
    options.update(overrides)
    return options


def _trainer_class(select_inputs: Callable[[dict[str, Any], int, int], dict[str, Any]] | None) -> Any:
    """``Trainer``, or a subclass that lets ``select_inputs`` pick each batch's inputs with the
    loop's step counter (``state.global_step`` = optimizer steps done) and total steps."""
    from transformers import Trainer

    if select_inputs is None:
        return Trainer

    class StepAwareTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = select_inputs(dict(inputs), int(self.state.global_step), int(self.state.max_steps))
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

    return StepAwareTrainer


def _last_checkpoint(checkpoint_dir: str | None) -> str | None:
    """The newest complete ``checkpoint-N`` folder in ``checkpoint_dir``, if any."""
    if checkpoint_dir is None or not os.path.isdir(checkpoint_dir):
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(checkpoint_dir)


def log_lines(log: Sequence[dict[str, Any]]) -> str:
    """The training log as JSON lines."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in log)
