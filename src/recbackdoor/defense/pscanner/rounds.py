"""Iterative adversarial optimisation (docs/design.md §5): each round the agent proposes fresh triggers,
the scanner is tested on them, the triggers it misses become hard positives for its next
update, and the agent learns from (evading > caught) preference pairs to propose harder ones.

``rounds.jsonl`` has one line per scanner state ``r = 0..R`` (state 0 = after supervised +
DPO training): recall on that round's fresh agent triggers and FPR on held-out clean titles
(at a working point of ``round_fpr`` on clean titles, and at the calibrated per-title
threshold), AUROC of fresh triggered vs clean titles, the agent's evasion rate, validation
F1, per-title F1 / AUROC on the fixed probe set (``probe``: the same titles and hidden
triggers every round, so rounds compare on one yardstick), and what the update to state
``r + 1`` used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...eval.detection import threshold_at_fpr
from .agent import CatalogVocab, Proposal, TriggerAgent, mixed_proposals
from .calibrate import ProbeSet, ValidationSet, calibrate
from .optimise import sft_yes_no
from .scanner import PScanner, scanner_prompt
from .synth import Example, insert_generated, make_examples

ROUND_KEYS = (
    "round",
    "recall_fresh",
    "recall_fresh_by_level",
    "fpr_clean",
    "auroc_fresh",
    "agent_evasion_rate",
    "n_fresh_triggers",
    "n_agent_triggers",
    "threshold_title",
    "evidence_thresholds",
    "val_f1_title",
    "val_f1_evidence",
    "probe",
    "update",
)


@dataclass
class RoundContext:
    """Everything a round reads and updates."""

    scanner: PScanner
    agent: TriggerAgent | None
    vocab: CatalogVocab
    pool: list[str]  # clean titles to insert triggers into
    val: ValidationSet
    config: Any  # ScannerConfig
    rng: np.random.Generator
    used_triggers: set[str] = field(default_factory=set)
    replay: list[Example] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    log_path: Path | None = None
    progress: bool = True
    timings: dict[str, float] = field(default_factory=dict)  # kept out of the logs (not deterministic)
    probe: ProbeSet | None = None


def recalibrate(ctx: RoundContext) -> dict:
    """Fresh thresholds for the scanner's current weights (cache cleared first)."""
    cfg = ctx.config
    sc = ctx.scanner
    sc.clear_cache()
    report = calibrate(
        sc.title_scores, ctx.val, cfg.evidence, cfg.threshold_rule, cfg.target_fpr, sc.evidence_options(),
        own_margin_logit=getattr(cfg, "own_margin_logit", 0.0),
    )
    sc.threshold_title = report["threshold_title"]
    sc.evidence_thresholds = report["evidence_thresholds"]
    sc.reference = report.pop("reference")  # scores of these weights; kept out of the logs
    return report


def _fresh_positives(ctx: RoundContext, proposals: list[Proposal]) -> list[tuple[int, Example]]:
    """Each fresh trigger inserted into ``round_insertions`` random pool titles."""
    out = []
    for j, p in enumerate(proposals):
        for _ in range(ctx.config.round_insertions):
            title = str(ctx.rng.choice(ctx.pool))
            out.append((j, Example(insert_generated(title, p.trigger, p.level, ctx.rng), 1, p.level, p.trigger)))
    return out


def adversarial_round(ctx: RoundContext, r: int, calib: dict) -> tuple[dict, tuple]:
    """Test scanner state ``r`` on fresh triggers; returns the log entry and what an update
    needs (proposals, fresh titles, caught flags, evading triggers)."""
    t0 = time.perf_counter()
    cfg, sc = ctx.config, ctx.scanner
    proposals: list[Proposal] = []
    for level in ("char", "word", "sentence"):
        got = mixed_proposals(
            ctx.agent, ctx.vocab, level, cfg.round_triggers, 0, sc.domain, ctx.rng, avoid=ctx.used_triggers
        )
        proposals += got
        ctx.used_triggers |= {p.trigger.lower() for p in got}
    fresh = _fresh_positives(ctx, proposals)
    own = sc.title_scores([e.title for _, e in fresh]) if fresh else np.zeros(0)
    clean_own = sc.title_scores(ctx.val.clean)
    # "caught" at a working point with real recall (FPR ``round_fpr`` on clean titles): the
    # calibrated per-title threshold is set for a 1% prevalence and misses nearly everything,
    # which would make every trigger "evading" and the agent's preference pairs empty
    working = threshold_at_fpr(clean_own, cfg.round_fpr)
    caught = own >= working
    per_trigger = np.zeros(len(proposals))
    counts = np.zeros(len(proposals))
    for (j, _), c in zip(fresh, caught, strict=True):
        per_trigger[j] += c
        counts[j] += 1
    evaded = per_trigger < 0.5 * np.maximum(counts, 1)
    by_level = {
        lv: float(np.mean([c for (_, e), c in zip(fresh, caught, strict=True) if e.kind == lv]))
        for lv in ("char", "word", "sentence")
        if any(e.kind == lv for _, e in fresh)
    }
    entry: dict[str, Any] = {
        "round": r,
        "recall_fresh": float(caught.mean()) if len(caught) else None,
        "recall_fresh_by_level": by_level,
        "fpr_clean": float(np.mean(clean_own >= working)),
        "working_threshold": working,
        "auroc_fresh": _auroc(own, clean_own),
        "recall_fresh_calibrated": float(np.mean(own >= sc.threshold_title)) if len(own) else None,
        "fpr_clean_calibrated": float(np.mean(clean_own >= sc.threshold_title)),
        "agent_evasion_rate": float(evaded.mean()) if len(evaded) else None,
        "n_fresh_triggers": len(proposals),
        "n_agent_triggers": sum(p.source == "agent" for p in proposals),
        "threshold_title": sc.threshold_title,
        "evidence_thresholds": sc.evidence_thresholds,
        "val_f1_title": calib["title"]["all"]["f1"],
        "val_f1_evidence": calib.get("evidence", {}).get("all", {}).get("f1"),
        "probe": ctx.probe.metrics(sc.title_scores(ctx.probe.titles), sc.threshold_title) if ctx.probe else None,
        "update": None,
    }
    ctx.timings[f"round_{r}_test"] = round(time.perf_counter() - t0, 2)
    return entry, (proposals, fresh, caught, evaded)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """AUROC of fresh triggered titles against clean titles: progress without a threshold."""
    from sklearn.metrics import roc_auc_score

    if len(pos) == 0 or len(neg) == 0:
        return None
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def _update(ctx: RoundContext, r: int, proposals: list[Proposal], fresh: list, caught: np.ndarray, evaded: np.ndarray) -> dict:
    """Scanner: hard positives (missed fresh titles, plus one more insertion of each evading
    trigger) with as many negatives and a replay of earlier examples. Agent: DPO on
    (evading > caught) pairs of its own proposals, same prompt."""
    cfg, sc = ctx.config, ctx.scanner
    hard = [e for (_, e), c in zip(fresh, caught, strict=True) if not c]
    for j in np.flatnonzero(evaded):
        p = proposals[j]
        title = str(ctx.rng.choice(ctx.pool))
        hard.append(Example(insert_generated(title, p.trigger, p.level, ctx.rng), 1, p.level, p.trigger))
    negatives = make_examples(ctx.pool, {}, sc.domain, max(len(hard), 8), ctx.rng, positive_share=0.0)
    k = min(len(ctx.replay), cfg.round_replay)
    replay = [ctx.replay[i] for i in ctx.rng.choice(len(ctx.replay), size=k, replace=False)] if k else []
    batch = hard + negatives + replay
    info: dict[str, Any] = {"hard_positives": len(hard), "negatives": len(negatives), "replay": len(replay)}
    if hard:
        prompts = [scanner_prompt(e.title, sc.domain) for e in batch]
        info["sft"] = sft_yes_no(
            sc.model, sc.tokenizer, prompts, [e.label for e in batch],
            lr=cfg.lr, epochs=1, batch_size=cfg.batch_size, seed=cfg.seed + 101 * (r + 1),
            progress=ctx.progress, desc=f"round {r + 1} scanner",
        )  # fmt: skip
        ctx.replay.extend(hard)
    pairs = []
    if ctx.agent is not None and cfg.agent_pairs > 0:
        for level in ("char", "word", "sentence"):
            idx = [j for j, p in enumerate(proposals) if p.level == level and p.source == "agent"]
            win = [proposals[j] for j in idx if evaded[j]]
            lose = [proposals[j] for j in idx if not evaded[j]]
            pairs += [(w.prompt, w.trigger, lo.trigger) for w in win for lo in lose]
        if len(pairs) > cfg.agent_pairs:
            keep = np.sort(ctx.rng.choice(len(pairs), size=cfg.agent_pairs, replace=False))
            pairs = [pairs[i] for i in keep]
        info["agent"] = ctx.agent.update(pairs, seed=cfg.seed + 7 * (r + 1), lr=cfg.agent_lr, epochs=cfg.agent_epochs)
    return info


def run_rounds(ctx: RoundContext, callback: Callable[[int, PScanner, dict], None] | None = None) -> list[dict]:
    """Rounds ``0..R``: calibrate, test on fresh triggers, update (except after the last)."""
    n_rounds = ctx.config.rounds
    calib = recalibrate(ctx)
    for r in range(n_rounds + 1):
        entry, state = adversarial_round(ctx, r, calib)
        if callback is not None:
            callback(r, ctx.scanner, {**entry, "calibration": calib})
        if r < n_rounds:
            t0 = time.perf_counter()
            entry["update"] = _update(ctx, r, *state)
            calib = recalibrate(ctx)
            ctx.timings[f"round_{r}_update"] = round(time.perf_counter() - t0, 2)
        write_round(ctx, entry)
    return ctx.log


def write_round(ctx: RoundContext, entry: dict) -> None:
    """Keep the entry and append it to ``rounds.jsonl`` (one JSON object a line)."""
    ctx.log.append(entry)
    if ctx.log_path is not None:
        with open(ctx.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
