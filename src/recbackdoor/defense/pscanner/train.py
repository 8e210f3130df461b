"""Training a P-Scanner on a catalog (docs/design.md §5), stage by stage:

1. split the catalog's titles into a training pool and held-out validation titles;
2. invent triggers per level: rule generator + LLM agent, filtered; some held out for
   validation (the attack module's default triggers are never used: see synth.py);
3. supervised Yes/No training on synthetic positives/negatives (cross-entropy);
4. reward-based policy optimisation (``policy``): TRL DPO (chosen = correct verdict, rejected =
   wrong one), or TRL GRPO (the scanner samples a verdict, rewarded +1 correct, -1 false
   alarm, -1.25 missed poison; ``grpo.py``), or none;
5. R adversarial rounds (rounds.py), recalibrating the threshold after every update.

Defaults are small (a few hundred examples, one epoch) so that a CPU trains a 135M-parameter
scanner in minutes; every number is a ``ScannerConfig`` field.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, RecBackdoorError
from ...io_utils import atomic_output_dir, write_json
from .agent import CatalogVocab, TriggerAgent, mixed_proposals
from .calibrate import THRESHOLD_RULES, build_probe, build_validation
from .evidence import MODES
from .optimise import add_lora, dpo_train, sft_yes_no, verdict_rows
from .robust import robust_negatives
from .rounds import RoundContext, run_rounds
from .scanner import PScanner, scanner_prompt
from .synth import attack_default_triggers, make_examples

DOMAINS = ("movies", "music", "games")
DEFEND_ROUNDS = 0  # adversarial rounds when ``defend`` trains a scanner on the catalog itself
LEVELS = ("char", "word", "sentence")
POLICIES = ("none", "dpo", "grpo")  # the reward step after supervised training


@dataclass
class ScannerConfig:
    """Every choice of scanner training, with fast CPU defaults."""

    backbone: str = "smollm2-135m"
    agent_backbone: str | None = None  # None: same as backbone
    use_agent: bool = True  # False: rule triggers only
    dtype: str | None = None  # None: the registry's default for the device
    device: str | None = None
    seed: int = 0
    rounds: int = 3
    max_titles: int | None = None  # cap on catalog titles used (random sample)
    # robust negatives (robust.py): leave titles sharing a repeated fragment of an unusual
    # shape out of training, so a poisoned catalog's own trigger is not learnt as clean
    robust: bool = True
    robust_min_count: int = 3
    robust_min_concentration: float = 0.5
    # supervised, then the reward step (policy: none | dpo | grpo) on n_policy fresh examples
    n_train: int = 1920  # 640 left SmolLM2 underfit on Steam (loss 0.58, AUROC 0.90 for char triggers)
    policy: str = "dpo"
    n_policy: int = 96
    lr: float = 1e-3
    dpo_lr: float = 5e-4
    dpo_batch_size: int = 8
    dpo_beta: float = 0.1
    grpo_lr: float = 5e-5
    grpo_generations: int = 4  # verdicts sampled per prompt (the group of GRPO)
    grpo_batch_size: int = 8
    grpo_epochs: int = 1
    batch_size: int = 16
    score_batch_size: int = 64
    lora_r: int = 8
    lora_alpha: int = 16
    lora_top_fraction: float = 0.5  # LoRA on the upper half of the layers (cheaper backward)
    # triggers
    n_rule_triggers: int = 24  # per level, for training
    n_agent_triggers: int = 8  # per level, for training
    n_val_triggers: int = 4  # per level, held out for calibration
    exclude_triggers: tuple[str, ...] = field(default_factory=attack_default_triggers)
    # validation / threshold
    n_val_clean: int = 500
    # ~10 of 300 validation titles, as the fixed policy's 10 targets: the cross-title evidence
    # is a significance, and 3 poisoned titles (1%) are not significant in any catalog
    val_share: float = 0.03
    val_share_large: float = 0.2  # every other validation trigger (BadRec per-sample: 10-20%); 0: off
    threshold_rule: str = "best-f1"  # how the threshold is calibrated: best-f1 | fpr (a rule, not a score)
    target_fpr: float = 0.01
    evidence: str = "max"  # off | max (cross-title evidence, see evidence.py)
    evidence_min_count: int = 3
    evidence_max_share: float = 1.0  # no cap: BadRec's per-sample policy triggers 10-20% of a catalog
    # the per-title channel of the combined score must clear the best clean validation title
    # by this much (logit): a few hundred validation titles cannot show the odd titles of a
    # catalog of thousands (ML-100K: "Mat' i syn (1997)" 0.81 vs validation max ~0.6)
    own_margin_logit: float = 1.5
    # adversarial rounds
    round_triggers: int = 6  # fresh agent triggers per level and round
    round_insertions: int = 2  # titles per fresh trigger
    round_replay: int = 48
    round_fpr: float = 0.05  # working point (FPR on clean titles) that decides "caught"
    # per-round probe (calibrate.ProbeSet): clean titles taken out of the training pool and
    # hidden triggers per level, scored after every round on the same yardstick; 0: no probe
    n_probe_clean: int = 200
    n_probe_triggers: int = 6
    agent_pairs: int = 12
    agent_lr: float = 5e-4
    agent_epochs: int = 3

    @classmethod
    def fast(cls, **overrides: Any) -> ScannerConfig:
        """What ``defend --method pscanner`` (and ``CatalogTrainedScanner().fit``) train when no scanner is
        given: 960 synthetic examples, 48 DPO pairs, rule triggers only (no agent model to load
        and sample), 300 held-out clean titles, no adversarial rounds: small enough for a
        few minutes of CPU (measured: docs/results/pscanner-defend.md)."""
        base: dict[str, Any] = dict(
            rounds=DEFEND_ROUNDS, n_train=960, n_policy=48, use_agent=False, n_val_clean=300, n_probe_clean=0
        )
        base.update(overrides)
        return cls(**base)

    def check(self) -> ScannerConfig:
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ConfigError(f"threshold rule {self.threshold_rule!r}: use one of {', '.join(THRESHOLD_RULES)}")
        if self.policy not in POLICIES:
            raise ConfigError(f"policy {self.policy!r}: use one of {', '.join(POLICIES)}")
        if self.evidence not in MODES:
            raise ConfigError(f"evidence mode {self.evidence!r}: use one of {', '.join(MODES)}")
        if self.rounds < 0:
            raise ConfigError(f"--rounds must be >= 0, got {self.rounds}")
        if self.max_titles is not None and self.max_titles < 20:
            raise ConfigError(f"--max-titles must be at least 20, got {self.max_titles}")
        for name in ("val_share", "val_share_large"):
            if not 0 <= getattr(self, name) < 0.5 or (name == "val_share" and self.val_share == 0):
                raise ConfigError(f"{name} must be in (0, 0.5), got {getattr(self, name)}")
        if not 0 <= self.target_fpr <= 1:
            raise ConfigError(f"target_fpr must be in [0, 1], got {self.target_fpr}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["exclude_triggers"] = list(self.exclude_triggers)
        return d


class CatalogTrainedScanner(PScanner):
    """A P-Scanner that trains itself on the catalog it is fitted to (``ScannerConfig.fast``
    unless ``config`` says otherwise): what ``defend --method pscanner`` does without
    ``--scanner``. The robust first pass (``robust.py``) keeps the catalog's own repeated
    poison out of the negatives. A threshold set before ``fit`` survives the training."""

    def __init__(self, config: ScannerConfig | None = None, *, progress: bool = False,
                 loader: Callable[..., tuple[Any, Any]] | None = None, **kwargs: Any) -> None:
        self.train_config = config or ScannerConfig.fast()
        self.train_loader = loader  # how the backbone is loaded (None: the registry)
        super().__init__(backbone=self.train_config.backbone, progress=progress, **kwargs)

    def fit(self, titles: Sequence[str], domain: str) -> PScanner:
        titles = [str(t) for t in titles]
        if self.model is None:
            trained = train_scanner(titles, domain, self.train_config, progress=self.progress,
                                    loader=self.train_loader)
            override, channels = self._threshold_override, self.channels
            self.__dict__.update(trained.__dict__)
            self._threshold_override = override
            if channels != self.channels:
                self.set_channels(channels)
        return super().fit(titles, domain)


def split_pool(titles: Sequence[str], cfg: ScannerConfig, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Distinct titles (capped at ``max_titles``) split into a training pool and held-out
    validation titles (``n_val_clean``, at most 40% of them)."""
    distinct = list(dict.fromkeys(" ".join(str(t).split()) for t in titles if str(t).strip()))
    if len(distinct) < 20:
        raise RecBackdoorError(f"catalog has {len(distinct)} distinct titles; the scanner needs at least 20")
    order = rng.permutation(len(distinct))
    if cfg.max_titles is not None:
        order = order[: cfg.max_titles]
    n_val = min(cfg.n_val_clean, int(0.4 * len(order)))
    val = [distinct[i] for i in order[:n_val]]
    pool = [distinct[i] for i in order[n_val:]]
    return pool, val


def _load(name: str, cfg: ScannerConfig, loader: Callable | None) -> tuple[Any, Any]:
    if loader is None:
        from ...models.backbones import load_backbone as loader
    return loader(name, dtype=cfg.dtype, device=cfg.device)


def _policy_step(
    model: Any, tokenizer: Any, pool: list[str], triggers: dict[str, list[str]], domain: str,
    cfg: ScannerConfig, rng: np.random.Generator, progress: bool,
) -> dict:
    """The reward step on ``n_policy`` fresh synthetic examples: DPO on (correct > wrong)
    verdict pairs, or GRPO on sampled verdicts; ``{"method": "none"}`` when off."""
    if cfg.policy == "none" or cfg.n_policy <= 0:
        return {"method": "none"}
    examples = make_examples(pool, triggers, domain, cfg.n_policy, rng)
    prompts = [scanner_prompt(e.title, domain) for e in examples]
    labels = [e.label for e in examples]
    if cfg.policy == "dpo":
        out = dpo_train(
            model, tokenizer, verdict_rows(tokenizer, prompts, labels), seed=cfg.seed, lr=cfg.dpo_lr,
            beta=cfg.dpo_beta, batch_size=cfg.dpo_batch_size, progress=progress,
        )  # fmt: skip
    else:
        from .grpo import grpo_train

        out = grpo_train(
            model, tokenizer, prompts, labels, seed=cfg.seed, lr=cfg.grpo_lr, num_generations=cfg.grpo_generations,
            batch_size=cfg.grpo_batch_size, epochs=cfg.grpo_epochs, progress=progress,
        )  # fmt: skip
    return {"method": cfg.policy, "n": len(examples), **out}


def train_scanner(
    titles: Sequence[str],
    domain: str,
    config: ScannerConfig | None = None,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    callback: Callable[[int, PScanner, dict], None] | None = None,
    loader: Callable[..., tuple[Any, Any]] | None = None,
) -> PScanner:
    """Train a scanner on a catalog's titles (treated as clean: a ~1% poisoned share only adds
    label noise). With ``out``, save it there atomically (adapter, scanner.json, rounds.jsonl).
    ``callback(r, scanner, entry)`` sees each scanner state r = 0..R before it is updated."""
    cfg = (config or ScannerConfig()).check()
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}; use one of {', '.join(DOMAINS)}")
    if out is not None:
        with atomic_output_dir(out, force=force) as tmp:
            scanner = _train(titles, domain, cfg, tmp, progress, callback, loader)
            scanner.save(tmp)
        return scanner
    return _train(titles, domain, cfg, None, progress, callback, loader)


def _train(
    titles: Sequence[str],
    domain: str,
    cfg: ScannerConfig,
    out: Path | None,
    progress: bool,
    callback: Callable | None,
    loader: Callable | None,
) -> PScanner:
    import torch

    timings: dict[str, float] = {}
    t_start = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    dropped: dict[str, str] = {}
    if cfg.robust:
        titles, dropped = robust_negatives(
            titles, min_count=cfg.robust_min_count, min_concentration=cfg.robust_min_concentration
        )
    pool, val_clean = split_pool(titles, cfg, rng)
    n_probe = min(cfg.n_probe_clean, len(pool) // 4)
    probe_clean = [pool[i] for i in sorted(rng.choice(len(pool), size=n_probe, replace=False))] if n_probe else []
    if probe_clean:
        taken = set(probe_clean)
        pool = [t for t in pool if t not in taken]
    n_probe_trig = cfg.n_probe_triggers if probe_clean else 0
    vocab = CatalogVocab.from_titles(pool + val_clean, exclude=cfg.exclude_triggers)

    base, tokenizer = _load(cfg.backbone, cfg, loader)
    model = add_lora(base, cfg.lora_r, cfg.lora_alpha, seed=cfg.seed, top_fraction=cfg.lora_top_fraction)
    agent = None
    if cfg.use_agent:
        a_base, a_tok = _load(cfg.agent_backbone or cfg.backbone, cfg, loader)
        agent = TriggerAgent(add_lora(a_base, cfg.lora_r, cfg.lora_alpha, seed=cfg.seed + 1), a_tok, domain, vocab)
    lap("load")

    # triggers: training and held-out validation ones, from both sources
    train_trig: dict[str, list[str]] = {}
    val_trig: dict[str, list[str]] = {}
    used: set[str] = set()
    sources: dict[str, dict[str, int]] = {}
    probe_trig: dict[str, list[str]] = {}
    for level in LEVELS:
        props = mixed_proposals(
            agent, vocab, level, cfg.n_agent_triggers, cfg.n_rule_triggers + cfg.n_val_triggers + n_probe_trig,
            domain, rng, avoid=used,
        )  # fmt: skip
        used |= {p.trigger.lower() for p in props}
        agent_p = [p.trigger for p in props if p.source == "agent"]
        rule_p = [p.trigger for p in props if p.source == "rule"]
        # validation: alternate agent and rule triggers so calibration sees both sources
        held: list[str] = []
        for i in range(cfg.n_val_triggers):
            src = agent_p if (i % 2 == 1 and agent_p) else rule_p
            if src:
                held.append(src.pop(int(rng.integers(0, len(src)))))
        val_trig[level] = held
        if n_probe_trig:  # hidden from training and calibration alike
            probe_trig[level] = [rule_p.pop(int(rng.integers(0, len(rule_p)))) for _ in range(min(n_probe_trig, len(rule_p)))]
        train_trig[level] = agent_p + rule_p
        sources[level] = {"agent": len(agent_p), "rule": len(rule_p), "val": len(held), "probe": len(probe_trig.get(level, []))}
    lap("triggers")

    examples = make_examples(pool, train_trig, domain, cfg.n_train, rng)
    prompts = [scanner_prompt(e.title, domain) for e in examples]
    labels = [e.label for e in examples]
    sft = sft_yes_no(model, tokenizer, prompts, labels, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, progress=progress)
    lap("sft")
    # the reward step sees fresh titles and insertions (the supervised pass has fit its own)
    policy = _policy_step(model, tokenizer, pool, train_trig, domain, cfg, rng, progress)
    lap("policy")

    scanner = PScanner(
        model, tokenizer, backbone=cfg.backbone, domain=domain, evidence=cfg.evidence,
        config=cfg.to_dict(), batch_size=cfg.score_batch_size, progress=progress,
    )  # fmt: skip
    shares = [cfg.val_share, cfg.val_share_large] if cfg.val_share_large > 0 else [cfg.val_share]
    val = build_validation(val_clean, val_trig, shares, rng)
    ctx = RoundContext(
        scanner=scanner, agent=agent, vocab=vocab, pool=pool, val=val, config=cfg, rng=rng,
        used_triggers=used, replay=list(examples),
        probe=build_probe(probe_clean, probe_trig, rng) if probe_clean else None,
        log_path=(out / "rounds.jsonl") if out is not None else None, progress=progress,
    )  # fmt: skip
    rounds_log = run_rounds(ctx, callback)
    timings.update(ctx.timings)
    lap("rounds")
    timings["total"] = round(time.perf_counter() - t_start, 2)
    scanner.log = {
        "n_titles": len(pool) + len(val_clean),
        "n_pool": len(pool),
        "n_val_clean": len(val_clean),
        "n_probe_clean": len(probe_clean),
        "probe_triggers": probe_trig,
        "n_dropped_suspicious": len(dropped),
        "dropped_fragments": dict(Counter(dropped.values()).most_common(20)),
        "trigger_sources": sources,
        "val_triggers": val_trig,
        "train_triggers": train_trig,
        "sft": sft,
        "policy": policy,
        "rounds": rounds_log,
    }
    if out is not None:
        write_json(out / "timing.json", timings)
    scanner.timings = timings
    return scanner
