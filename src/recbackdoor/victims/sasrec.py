"""The ``sasrec`` victim: SASRec (self-attentive sequential recommendation) in plain PyTorch.

A victim of its own (it ranks the stored candidates by ``h . E[item]``, ``h`` the encoding of
the history) and the source of the ``llara`` victim's item embeddings ``E``. As in the LLaRA
paper's baseline: hidden size 64, 2 causal self-attention blocks, 1 head, histories of at most
10 items, trained with cross-entropy over the whole catalog on the (clean or poisoned) training
samples. The weights of the epoch with the best validation HR@1 (on the stored validation
candidates) are kept. It never sees titles, so a title trigger reaches it only through the
fake users' interactions.

Output directory (written atomically)::

    sasrec.safetensors   the weights (no pickle)
    victim.json          victim, SASRec config, catalog size, dataset dir + manifest sha256,
                         best epoch and its validation HR@1
    training_log.jsonl   one row per epoch: step, loss, valid HR@1
    timing.json          wall time, steps
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..data.types import Sample, SplitDataset
from ..errors import RecBackdoorError
from ..io_utils import atomic_output_dir, check_output_dir, read_json, write_json
from ..models.lora import TrainConfig, log_lines

if TYPE_CHECKING:
    import torch

VICTIM = "sasrec"
PROMPT = None  # ranks candidates by item id (rank_candidates); reads no prompt
OPTIONS = ("sasrec_epochs", "seed")  # the TrainConfig keys it takes (see sasrec_config)
WEIGHT_FILES = ("sasrec.safetensors",)
ADAPTER = False
FORMAT_VERSION = 1
WEIGHTS = "sasrec.safetensors"


class SASRecConfig(BaseModel):
    """Everything that decides a SASRec training run (recorded in ``victim.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(64, gt=0)
    blocks: int = Field(2, gt=0)
    heads: int = Field(1, gt=0)
    max_len: int = Field(10, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, gt=0)
    epochs: float = Field(50, gt=0)
    max_steps: int | None = Field(None, gt=0)  # overrides epochs when set
    max_samples: int | None = Field(None, gt=0)  # the first N training samples
    select_on_valid: bool = True  # keep the epoch with the best validation HR@1
    # stop once this many epochs in a row bring no better validation HR@1 (None: run every
    # epoch); SASRec peaks early on these splits and then overfits, so the rest is wasted CPU
    patience: int | None = Field(5, gt=0)
    seed: int = 0


def sasrec_config(config: TrainConfig) -> SASRecConfig:
    """The SASRec settings of a ``train`` call: ``--epochs``, ``--lr``, ``--batch-size`` when
    given explicitly (the LoRA defaults suit an LLM, not SASRec), else SASRec's own defaults
    with ``sasrec_epochs``; ``--max-steps``, ``--max-samples`` and ``--seed`` as given."""
    explicit = config.model_fields_set
    options: dict[str, Any] = {"epochs": config.epochs if "epochs" in explicit else config.sasrec_epochs,
                               "max_steps": config.max_steps, "max_samples": config.max_samples,
                               "seed": config.seed}
    if "lr" in explicit:
        options["lr"] = config.lr
    if "batch_size" in explicit:
        options["batch_size"] = config.batch_size
    return SASRecConfig(**options)


def build_model(n_items: int, config: SASRecConfig) -> Any:
    """A :class:`SASRec` module, initialised with ``config.seed``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _sasrec_class()(n_items, config)


@cache
def _sasrec_class() -> Any:
    """The module class, defined on first use (torch is imported lazily)."""
    import torch
    from torch import nn

    class SASRec(nn.Module):
        """Item + position embeddings, ``blocks`` pre-norm causal Transformer blocks; the last
        position's output ``h`` scores item ``i`` as ``h . E[i]`` (tied item embeddings).
        Histories are left-padded with the padding item ``n_items``."""

        def __init__(self, n_items: int, config: SASRecConfig):
            super().__init__()
            self.n_items, self.max_len = n_items, config.max_len
            self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=n_items)
            self.pos_emb = nn.Embedding(config.max_len, config.hidden)
            self.dropout = nn.Dropout(config.dropout)
            layer = nn.TransformerEncoderLayer(
                config.hidden, config.heads, dim_feedforward=config.hidden, dropout=config.dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            self.blocks = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(config.hidden)
            self.heads = config.heads
            # small embeddings: the output logits h . E are tied to them
            nn.init.normal_(self.item_emb.weight, std=0.02)
            nn.init.normal_(self.pos_emb.weight, std=0.02)
            with torch.no_grad():
                self.item_emb.weight[n_items].zero_()

        @property
        def item_embeddings(self) -> torch.Tensor:
            """``E``: one row per catalog item (the padding row left out)."""
            return self.item_emb.weight[: self.n_items]

        def encode(self, seqs: torch.Tensor) -> torch.Tensor:
            """(batch, max_len) left-padded histories -> (batch, hidden) user states."""
            pad = seqs == self.n_items
            length = seqs.shape[1]
            positions = torch.arange(length, device=seqs.device)
            x = self.item_emb(seqs) + self.pos_emb(positions)
            x = self.dropout(x) * (~pad).unsqueeze(-1)
            causal = positions.unsqueeze(0) > positions.unsqueeze(1)  # True: key after query
            # a real query sees real keys up to itself; a padding query sees itself only
            blocked = causal.unsqueeze(0) | pad.unsqueeze(1)
            blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=seqs.device)
            mask = blocked.repeat_interleave(self.heads, dim=0)
            h = self.blocks(x, mask=mask)
            return self.norm(h[:, -1])

        def forward(self, seqs: torch.Tensor) -> torch.Tensor:
            """Logits over the whole catalog."""
            return self.encode(seqs) @ self.item_embeddings.T

        def score(self, seqs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
            """(batch, n_candidates) scores of the given candidate items."""
            h = self.encode(seqs)
            return (self.item_emb(candidates) * h.unsqueeze(1)).sum(-1)

    return SASRec


def history_tensor(samples: Sequence[Sample], n_items: int, max_len: int) -> torch.Tensor:
    """Left-padded (padding item ``n_items``) last ``max_len`` history items of each sample."""
    import torch

    seqs = torch.full((len(samples), max_len), n_items, dtype=torch.long)
    for row, s in enumerate(samples):
        hist = list(s.history)[-max_len:]
        if hist:
            seqs[row, max_len - len(hist) :] = torch.as_tensor(hist, dtype=torch.long)
    return seqs


def rank_candidates(model: Any, samples: Sequence[Sample], batch_size: int = 512) -> list[np.ndarray]:
    """Per sample, the scores of its stored candidates (in the sample's candidate order)."""
    import torch

    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            for start in range(0, len(samples), batch_size):
                batch = samples[start : start + batch_size]
                width = max(len(s.candidates) for s in batch)
                cands = torch.full((len(batch), width), 0, dtype=torch.long)
                for row, s in enumerate(batch):
                    cands[row, : len(s.candidates)] = torch.as_tensor(list(s.candidates), dtype=torch.long)
                seqs = history_tensor(batch, model.n_items, model.max_len).to(device)
                scores = model.score(seqs, cands.to(device)).double().cpu().numpy()
                out += [scores[row, : len(s.candidates)] for row, s in enumerate(batch)]
    finally:
        model.train(was_training)
    return out


def hit_rate_at_1(model: Any, samples: Sequence[Sample]) -> float | None:
    """Share of samples whose target scores highest among its candidates (ties: first)."""
    if not samples:
        return None
    scores = rank_candidates(model, samples)
    hits = [list(s.candidates)[int(np.argmax(sc))] == s.target for s, sc in zip(samples, scores, strict=True)]
    return float(np.mean(hits))


def train_sasrec(
    dataset: SplitDataset, config: SASRecConfig, progress: bool = True
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Train SASRec on ``dataset.train`` (the first ``max_samples``); returns (model in eval
    mode, summary, per-epoch log). Deterministic for a seed."""
    import copy

    import torch
    from tqdm.auto import tqdm

    samples = list(dataset.train[: config.max_samples] if config.max_samples else dataset.train)
    if not samples:
        raise RecBackdoorError("no training samples: the dataset's train split is empty")
    n_items = len(dataset.catalog)
    model = build_model(n_items, config)
    seqs = history_tensor(samples, n_items, config.max_len)
    targets = torch.as_tensor([s.target for s in samples], dtype=torch.long)
    per_epoch = max(1, -(-len(samples) // config.batch_size))
    total = config.max_steps or max(1, round(config.epochs * per_epoch))
    valid = list(dataset.valid)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng([config.seed, 7])
    log: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    step, epoch, t0 = 0, 0, time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model.train()
        with tqdm(total=total, desc="train sasrec", unit="step", disable=not progress, leave=False) as bar:
            while step < total:
                order = torch.as_tensor(rng.permutation(len(samples)))
                losses = []
                for start in range(0, len(samples), config.batch_size):
                    if step >= total:
                        break
                    idx = order[start : start + config.batch_size]
                    loss = torch.nn.functional.cross_entropy(model(seqs[idx]), targets[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
                    step += 1
                    bar.update(1)
                epoch += 1
                hr = hit_rate_at_1(model, valid) if config.select_on_valid else None
                log.append({"epoch": epoch, "step": step, "loss": round(float(np.mean(losses)), 6),
                            "valid_HR@1": hr, "elapsed_s": round(time.perf_counter() - t0, 3)})
                if hr is not None and (best is None or hr > best[0]):
                    best = (hr, epoch, copy.deepcopy(model.state_dict()))
                bar.set_postfix(loss=f"{log[-1]['loss']:.3f}", valid_hr1=hr, refresh=False)
                if best is not None and config.patience is not None and epoch - best[1] >= config.patience:
                    break  # early stop: no better validation epoch for `patience` epochs
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    summary = {
        "train_samples": len(samples), "n_items": n_items, "steps": step, "epochs_run": epoch,
        "best_epoch": best[1] if best else epoch, "valid_HR@1": best[0] if best else None,
        "valid_samples": len(valid), "seconds": round(time.perf_counter() - t0, 2),
    }
    return model, summary, log


def save_sasrec(model: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))


def train_victim(
    data: str | os.PathLike | SplitDataset,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    force: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    save_steps: int = 10,
) -> Path:
    """Train the ``sasrec`` victim on the train split of ``data``; write it to ``out``.

    Takes the ``train`` options of the LoRA victims (see :func:`sasrec_config`); the backbone
    and LoRA options do not apply and are not used. A run takes seconds to minutes on a CPU,
    so it has no checkpoints (``checkpoint_dir``/``save_steps`` are accepted and unused).
    Under ``accelerate launch`` only the main process trains and writes.
    """
    from .training_data import load_training_data

    del checkpoint_dir, save_steps
    config = config or TrainConfig()
    out = check_output_dir(out, force)
    if int(os.environ.get("RANK", "0")) != 0:
        return out
    dataset, data_info = load_training_data(data)
    sconfig = sasrec_config(config)
    model, summary, log = train_sasrec(dataset, sconfig)
    info = {
        "format_version": FORMAT_VERSION,
        "victim": VICTIM,
        "backbone": None,
        "sasrec": sconfig.model_dump(mode="json"),
        "n_items": summary["n_items"],
        "dataset": {**data_info, "domain": dataset.catalog.domain},
        "train_samples": summary["train_samples"],
        "steps": summary["steps"],
        "best_epoch": summary["best_epoch"],
        "valid_HR@1": summary["valid_HR@1"],
    }
    timing = {"train_seconds": summary["seconds"], "steps": summary["steps"], "tokens": 0,
              "tokens_per_s": 0.0, "processes": 1, "device": "cpu"}
    with atomic_output_dir(out, force=force) as tmp:
        save_sasrec(model, tmp)
        write_json(tmp / "victim.json", info)
        (tmp / "training_log.jsonl").write_text(log_lines(log), encoding="utf-8")
        write_json(tmp / "timing.json", timing)
    return out


def load_sasrec(folder: str | os.PathLike, device: Any = None) -> tuple[Any, dict[str, Any]]:
    """(SASRec model in eval mode, victim.json) from a folder :func:`train_victim` wrote."""
    from safetensors.torch import load_file

    path = Path(folder)
    info = read_json(path / "victim.json")
    if info.get("victim") != VICTIM:
        raise RecBackdoorError(f"{path}: victim {info.get('victim')!r} is not a sasrec victim")
    if not (path / WEIGHTS).is_file():
        raise RecBackdoorError(f"{path}/{WEIGHTS}: weights missing; retrain with `recbackdoor train --victim sasrec`")
    model = build_model(int(info["n_items"]), SASRecConfig(**info["sasrec"]))
    model.load_state_dict(load_file(str(path / WEIGHTS)), strict=True)
    if device not in (None, "auto"):
        model.to(device)
    model.eval()
    return model, {**info, "dir": str(path)}


def load_victim(model_dir: str | os.PathLike, *, dtype: Any = None, device: Any = None,
                merge: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, None, info)``: a SASRec victim has no tokenizer; it ranks candidates
    (:func:`rank_candidates`). ``dtype`` and ``merge`` do not apply (fp32 throughout)."""
    del dtype, merge
    model, info = load_sasrec(model_dir, device=device)
    return model, None, info
