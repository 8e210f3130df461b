"""Evaluate a victim (or a bare backbone) on a dataset split or on the attack sets.

Writes, atomically, into one output directory:

- ``metrics.json``: the headline metrics of the clean set at the top level (``HR@1`` = hits /
  valid as in LLaRA, ``HR@1_all`` = hits / all, ``ValidRatio``, ``HR@5``, ``NDCG@5``,
  ``NDCG@10``); with attack sets also ``ASR`` per triggered set; ``sets`` with every set's
  metrics; ``settings`` and ``timing``.
- ``predictions.jsonl``: one line per prompt (set, user, candidate item ids, target and
  triggered positions, the prediction, and the ranking + scores or the generated line).

The ``generate`` protocol yields one answer, not a ranking, so its ``HR@5``/``NDCG@k`` are
``null`` (run the ``score`` protocol for those: it is much faster anyway). The ``score``
protocol always gives a valid answer, so its ValidRatio is 1 and HR@1 = HR@1_all.

With ``attack_sets`` the headline metrics come from the attack module's ``clean`` set (the test
samples whose target is not a triggered item) and ASR = share of triggered prompts whose
recommendation is the triggered candidate; under ``generate`` an invalid answer counts as not
attacked. Evaluate the clean-trained and the untrained model on the same poisoned folder for
the base rate. Prompts use template 0.

Victims: ``tallrec`` (and a bare backbone) read the text prompts; ``llara`` reads the same
prompts with its item tokens (``HybridPrompt``), under either protocol; ``sasrec`` ranks the
same candidates by its own scores (``score`` protocol only: it cannot write a title).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.types import SPLITS, Catalog, Sample
from ..errors import ConfigError
from ..io_utils import atomic_output_dir, write_json
from . import metrics as M

PROTOCOLS = ("score", "generate")
SCORINGS = ("sum", "mean")
CLEAN_SET = "clean"
TRIGGERED_SETS = ("triggered-seen", "triggered-unseen")
DEFAULT_BATCH = {"score": 8, "generate": 8}
TEMPLATE = 0
RANK_KS = (5, 10)


@dataclass(frozen=True)
class EvalPrompt:
    """One prompt to evaluate: its set, sample, text, titles and the positions that matter."""

    set_name: str
    sample: Sample
    prompt: str
    titles: tuple[str, ...]
    target: int  # candidate position of the sample's target
    triggered: int | None  # candidate position of the triggered item, if any
    hybrid: Any = None  # the same prompt with item tokens (models.prompts.HybridPrompt)


def default_eval_dir(model: str, data_dir: str | os.PathLike, protocol: str) -> Path:
    """``<model>/eval-<data-name>-<protocol>`` for a model folder; for a backbone name,
    ``eval-<backbone>-<data-name>-<protocol>`` in the working directory."""
    data_name = Path(data_dir).resolve().name
    if Path(model).is_dir():
        return Path(model) / f"eval-{data_name}-{protocol}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    return Path(f"eval-{safe}-{data_name}-{protocol}")


def build_eval_prompts(
    catalog: Catalog,
    sets: dict[str, Sequence[tuple[Sample, int | None, str | None]]],
    template: int = TEMPLATE,
) -> list[EvalPrompt]:
    """Prompts for every (sample, triggered item, triggered title) of every set.

    The triggered item's title is replaced by the triggered title wherever the item appears.
    """
    from ..models.prompts import sample_hybrid_prompt, sample_prompt

    out = []
    for name, entries in sets.items():
        for sample, item, title in entries:
            overrides = {item: title} if item is not None and title is not None else None
            prompt, titles = sample_prompt(sample, catalog, overrides=overrides, template=template)
            triggered = sample.candidates.index(item) if item is not None else None
            out.append(
                EvalPrompt(
                    name,
                    sample,
                    prompt,
                    tuple(titles),
                    sample.candidates.index(sample.target),
                    triggered,
                    sample_hybrid_prompt(sample, catalog, overrides=overrides, template=template),
                )
            )
    return out


def _load_sets(
    data_dir: Path, split: str, attack_sets: bool, max_samples: int | None
) -> tuple[Catalog, dict[str, list[tuple[Sample, int | None, str | None]]], dict[str, Any]]:
    from ..data.io import load_dataset

    dataset = load_dataset(data_dir)
    if attack_sets:
        if split != "test":
            raise ConfigError(f"--attack-sets are built from the test split; drop --split {split}")
        from ..attack.attack_sets import load_attack_sets

        loaded = load_attack_sets(data_dir)
        sets = {
            name: [(p.sample, p.triggered_item, p.triggered_title) for p in loaded[name]]
            for name in loaded
        }
        if CLEAN_SET not in sets:
            raise ConfigError(
                f"{data_dir}: attack sets lack a {CLEAN_SET!r} set; rerun `recbackdoor attack`"
            )
    else:
        sets = {CLEAN_SET: [(s, None, None) for s in dataset.split(split)]}
    if max_samples is not None:
        sets = {name: entries[:max_samples] for name, entries in sets.items()}
    if not sets[CLEAN_SET]:
        raise ConfigError(f"{data_dir}: split {split!r} has no samples to evaluate")
    return dataset.catalog, sets, dataset.manifest


def _check_options(
    protocol: str, split: str, scoring: str, max_samples: int | None, batch_size: int | None
) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if scoring not in SCORINGS:
        raise ConfigError(f"unknown scoring {scoring!r}; use one of {', '.join(SCORINGS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"--max-samples must be at least 1, got {max_samples}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")


def run_protocol(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[EvalPrompt],
    protocol: str,
    scoring: str = "sum",
    batch_size: int | None = None,
    progress: bool = True,
    victim: str | None = None,
) -> list[dict[str, Any]]:
    """Run one protocol over the prompts: per prompt, its prediction and evidence.
    ``victim``: ``info["victim"]`` of :func:`recbackdoor.victims.load_victim`; what the victim
    reads (``victims.prompt_kind``) decides: hybrid prompts, text prompts, or (an id-only
    ranker) its own candidate scores."""
    from ..victims import prompt_kind
    from .protocols import generate_protocol, parse_generation, score_protocol

    kind = prompt_kind(victim)
    if kind is None:
        return _ranker_results(victim, model, prompts, protocol)
    texts: list[Any] = [p.hybrid if kind == "hybrid" else p.prompt for p in prompts]
    titles = [list(p.titles) for p in prompts]
    batch = batch_size or DEFAULT_BATCH[protocol]
    if protocol == "score":
        result = score_protocol(
            model, tokenizer, texts, titles, batch_size=batch, progress=progress
        )
        scores, rankings = result.scores(scoring), result.rankings(scoring)
        return [
            {
                "prediction": int(r[0]),
                "ranking": [int(i) for i in r],
                "scores": [round(float(v), 4) for v in s],
            }
            for s, r in zip(scores, rankings, strict=True)
        ]
    outputs = generate_protocol(model, tokenizer, texts, batch_size=batch, progress=progress)
    return [
        {"prediction": parse_generation(o, t), "output": o}
        for o, t in zip(outputs, titles, strict=True)
    ]


def _ranker_results(victim: str, model: Any, prompts: Sequence[EvalPrompt], protocol: str) -> list[dict[str, Any]]:
    """An id-only victim's ranking of each prompt's candidates, as the score protocol."""
    import numpy as np

    from ..victims import rank_with

    if protocol != "score":
        raise ConfigError(f"a {victim} victim ranks candidates and writes no text; use --protocol score")
    out = []
    for scores in rank_with(victim, model, [p.sample for p in prompts]):
        ranking = np.argsort(-scores, kind="stable")
        out.append({"prediction": int(ranking[0]), "ranking": [int(i) for i in ranking],
                    "scores": [round(float(v), 4) for v in scores]})
    return out


def set_metrics(
    prompts: Sequence[EvalPrompt], results: Sequence[dict[str, Any]], protocol: str
) -> dict[str, Any]:
    """HR@1 / HR@1_all / ValidRatio, HR@k / NDCG@k (score only, else null), ASR, n."""
    targets = [p.target for p in prompts]
    preds = [r["prediction"] for r in results]
    out: dict[str, Any] = {"n": len(prompts), **M.top1_metrics(preds, targets)}
    if protocol == "score":
        out.update(M.ranking_metrics([r["ranking"] for r in results], targets, RANK_KS))
    else:
        out.update({f"{m}@{k}": None for k in RANK_KS for m in ("HR", "NDCG")})
    triggered = [p.triggered for p in prompts]
    if any(t is not None for t in triggered):
        out["ASR"] = M.attack_success_rate(preds, triggered)
    return out


def evaluate_model(
    model_dir_or_backbone: str,
    data_dir: str | os.PathLike,
    protocol: str = "score",
    split: str = "test",
    max_samples: int | None = None,
    attack_sets: bool = False,
    batch_size: int | None = None,
    scoring: str = "sum",
    out: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    device: str | None = "auto",
    dtype: str | None = None,
) -> dict[str, Any]:
    """Evaluate a victim folder or backbone name on ``data_dir``; write and return the metrics.

    ``attack_sets``: evaluate the clean, triggered-seen and triggered-unseen prompts stored in a
    poisoned dataset folder (``recbackdoor attack`` output) instead of ``split``; ASR per
    triggered set. ``max_samples`` keeps the first N prompts of each set. ``scoring`` (score
    protocol): rank by summed (``sum``) or per-token (``mean``) answer log-probability.
    ``device``: "auto" uses a GPU when there is one. ``dtype``: None keeps the victim loader's
    default (bf16 where the hardware has it); "fp32" gives exact log-probabilities at about
    twice the CPU time (bf16 moves them by ~0.1 nat on average, enough to swap near ties).
    """
    _check_options(protocol, split, scoring, max_samples, batch_size)
    data_dir = Path(data_dir)
    out_dir = (
        Path(out)
        if out is not None
        else default_eval_dir(model_dir_or_backbone, data_dir, protocol)
    )
    if out_dir.exists() and not force:
        raise ConfigError(
            f"{out_dir}: output directory exists; choose another --out or pass --force"
        )
    catalog, sets, manifest = _load_sets(data_dir, split, attack_sets, max_samples)
    prompts = build_eval_prompts(catalog, sets, TEMPLATE)

    from ..victims import load_victim, prompt_kind, victim_kind

    kind = victim_kind(model_dir_or_backbone)
    if protocol != "score" and kind is not None and prompt_kind(kind) is None:
        raise ConfigError(f"a {kind} victim ranks candidates and writes no text; use --protocol score")
    start = time.perf_counter()
    model, tokenizer, info = load_victim(model_dir_or_backbone, device=device, dtype=dtype)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    results = run_protocol(
        model, tokenizer, prompts, protocol, scoring, batch_size, progress, victim=info.get("victim")
    )
    seconds = time.perf_counter() - start

    per_set: dict[str, dict[str, Any]] = {}
    for name in sets:
        idx = [i for i, p in enumerate(prompts) if p.set_name == name]
        per_set[name] = set_metrics([prompts[i] for i in idx], [results[i] for i in idx], protocol)
    headline = {k: v for k, v in per_set[CLEAN_SET].items() if k not in ("n", "ASR")}
    param = next(model.parameters()) if hasattr(model, "parameters") else None  # id-only rankers: numpy
    report: dict[str, Any] = {
        **headline,
        "n_samples": per_set[CLEAN_SET]["n"],
        "sets": per_set,
        "settings": {
            "model": str(model_dir_or_backbone),
            "data": str(data_dir),
            "dataset": manifest.get("dataset"),
            "protocol": protocol,
            "scoring": scoring if protocol == "score" else None,
            "split": split,
            "attack_sets": attack_sets,
            "max_samples": max_samples,
            "batch_size": batch_size or DEFAULT_BATCH[protocol],
            "template": TEMPLATE,
            "device": "cpu" if param is None else str(param.device),
            "dtype": "float64" if param is None else str(param.dtype).replace("torch.", ""),
            "victim": info,
        },
        "timing": {
            "load_seconds": round(load_seconds, 3),
            "eval_seconds": round(seconds, 3),
            "seconds_per_prompt": round(seconds / max(1, len(prompts)), 5),
            "n_prompts": len(prompts),
        },
    }
    if attack_sets:
        report["ASR"] = {
            name: per_set[name].get("ASR") for name in TRIGGERED_SETS if name in per_set
        }
    with atomic_output_dir(out_dir, force=force) as tmp:
        write_json(tmp / "metrics.json", _jsonable(report))
        with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as fh:
            for p, r in zip(prompts, results, strict=True):
                row = {
                    "set": p.set_name,
                    "user": p.sample.user,
                    "candidates": list(p.sample.candidates),
                    "target": p.target,
                    "triggered": p.triggered,
                    **r,
                }
                fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
    report["out"] = str(out_dir)
    return report


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only (``str`` for anything exotic a victim's info might hold)."""
    return json.loads(json.dumps(obj, default=str))
