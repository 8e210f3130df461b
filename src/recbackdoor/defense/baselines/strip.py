"""STRIP (Gao et al., 2019, "STRIP: a defence against trojan attacks on deep neural networks")
adapted to an LLM recommender: an inference-time detector of triggered *prompts*, not titles.

STRIP's idea: superimpose an input with other clean inputs; a clean input's prediction then
varies, while a triggered input keeps the attacker's prediction whatever is mixed in, so the
entropy of the predictions over the perturbed copies is low. For a recommendation prompt
(history titles + candidate titles) the analogue implemented here:

1. ``n_copies`` perturbed copies of the prompt, seeded per prompt (same prompt, same copies):
   ``history_share`` of the history items (at least one) are replaced by titles drawn from the
   clean pool (the histories of the calibration prompts, the defender's held-out clean
   traffic), and the candidates are shuffled. Candidate titles are never edited, so a trigger
   on a candidate survives, as STRIP's superimposition keeps a trigger intact.
2. Each copy is ranked by the victim with the ``score`` protocol (the prompt's KV cache serves
   its 20 candidates; :class:`VictimScorer`), scores mapped back to the original candidates.
3. ``statistic="softmax"`` (default): the mean over copies of the softmax of the candidate
   scores; ``"top1"``: the share of copies whose top-1 is each candidate. The prompt's score is
   ``1 - H / log(n_candidates)`` (H the entropy of that distribution): higher = the choice does
   not move = suspicious.
4. ``fit(clean_prompts)`` sets the threshold at a false-rejection rate ``frr`` (default 5%) on
   those clean prompts' scores (``threshold_at_fpr``); a prompt is flagged when its score
   reaches it. Calibration uses only clean prompts and never a target label.

The victim is any callable ``scorer(prompts) -> list of score arrays`` (one per prompt, one
score per candidate, higher = preferred), so tests can use a stub victim.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError

STATISTICS = ("softmax", "top1")
DEFAULT_FRR = 0.05


@dataclass(frozen=True)
class RecPrompt:
    """One recommendation prompt: history titles (oldest first) and candidate titles."""

    history: tuple[str, ...]
    candidates: tuple[str, ...]


Scorer = Callable[[Sequence[RecPrompt]], list[np.ndarray]]


class VictimScorer:
    """A victim's ``score`` protocol as a STRIP scorer: the prompt text as evaluation builds it
    (``build_prompt``, template 0), every candidate's answer log-likelihood (``sum`` or
    ``mean`` per token)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        domain: str,
        template: int = 0,
        scoring: str = "sum",
        batch_size: int = 8,
        progress: bool = False,
        info: dict[str, Any] | None = None,
    ) -> None:
        if scoring not in ("sum", "mean"):
            raise ConfigError(f"unknown scoring {scoring!r}; use sum or mean")
        self.model, self.tokenizer, self.domain = model, tokenizer, domain
        self.template, self.scoring, self.batch_size = template, scoring, batch_size
        self.progress = progress
        self.info = dict(info or {})

    @classmethod
    def load(cls, model: str, domain: str, dtype: Any = None, **options: Any) -> VictimScorer:
        """Load a victim directory (``recbackdoor train`` output) or a bare backbone name."""
        from ...victims import load_victim

        loaded, tokenizer, info = load_victim(str(model), dtype=dtype)
        return cls(loaded, tokenizer, domain, info=info, **options)

    def __call__(self, prompts: Sequence[RecPrompt]) -> list[np.ndarray]:
        from ...eval.protocols import score_protocol
        from ...models.prompts import build_prompt

        if not prompts:
            return []
        texts = [build_prompt(p.history, p.candidates, self.domain, self.template) for p in prompts]
        result = score_protocol(
            self.model, self.tokenizer, texts, [list(p.candidates) for p in prompts],
            batch_size=self.batch_size, progress=self.progress,
        )  # fmt: skip
        return result.scores(self.scoring)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


class StripDetector:
    """Low entropy of the victim's choice over perturbed copies flags a triggered prompt."""

    name = "strip"

    def __init__(
        self,
        scorer: Scorer,
        n_copies: int = 8,
        history_share: float = 0.5,
        shuffle_candidates: bool = True,
        statistic: str = "softmax",
        temperature: float = 1.0,
        frr: float = DEFAULT_FRR,
        threshold: float | None = None,
        pool: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if n_copies < 2:
            raise ConfigError(f"STRIP needs at least 2 perturbed copies, got {n_copies}")
        if not 0.0 <= history_share <= 1.0:
            raise ConfigError(f"history_share must be in [0, 1], got {history_share}")
        if statistic not in STATISTICS:
            raise ConfigError(f"unknown STRIP statistic {statistic!r}; use one of {', '.join(STATISTICS)}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        if not 0.0 <= frr < 1.0:
            raise ConfigError(f"frr (false-rejection rate) must be in [0, 1), got {frr}")
        self.scorer = scorer
        self.n_copies = int(n_copies)
        self.history_share = float(history_share)
        self.shuffle_candidates = bool(shuffle_candidates)
        self.statistic = statistic
        self.temperature = float(temperature)
        self.frr = float(frr)
        self._explicit = threshold
        self.threshold = float("inf") if threshold is None else float(threshold)
        self.pool: list[str] = sorted(set(pool)) if pool else []
        self.seed = int(seed)
        self.calibration_scores: np.ndarray | None = None

    # ---------------------------------------------------------------- perturbation
    def _rng(self, prompt: RecPrompt) -> np.random.Generator:
        key = zlib.crc32("\x1f".join((*prompt.history, "\x1e", *prompt.candidates)).encode("utf-8"))
        return np.random.default_rng([self.seed, key])

    def perturb(self, prompt: RecPrompt) -> list[tuple[RecPrompt, np.ndarray]]:
        """The ``n_copies`` perturbed copies of ``prompt``, each with ``order``: copy candidate
        ``j`` is original candidate ``order[j]``."""
        if not self.pool and self.history_share > 0:
            raise ConfigError("STRIP has no clean title pool to perturb histories with; call fit(clean prompts) or pass pool=")
        rng = self._rng(prompt)
        n_hist, n_cand = len(prompt.history), len(prompt.candidates)
        n_swap = 0 if self.history_share == 0 or n_hist == 0 else max(1, round(self.history_share * n_hist))
        copies = []
        for _ in range(self.n_copies):
            history = list(prompt.history)
            for pos in rng.choice(n_hist, size=n_swap, replace=False) if n_swap else ():
                history[int(pos)] = self.pool[int(rng.integers(len(self.pool)))]
            order = rng.permutation(n_cand) if self.shuffle_candidates else np.arange(n_cand)
            candidates = tuple(prompt.candidates[int(j)] for j in order)
            copies.append((RecPrompt(tuple(history), candidates), order))
        return copies

    # ---------------------------------------------------------------- Detector-like API
    def distributions(self, prompts: Sequence[RecPrompt]) -> list[np.ndarray]:
        """Per prompt, the distribution of the victim's choice over the original candidates."""
        perturbed = [self.perturb(p) for p in prompts]
        flat = [copy for copies in perturbed for copy, _ in copies]
        scores = self.scorer(flat) if flat else []
        if len(scores) != len(flat):
            raise ValueError(f"scorer returned {len(scores)} score arrays for {len(flat)} prompts")
        out, k = [], 0
        for prompt, copies in zip(prompts, perturbed, strict=True):
            dist = np.zeros(len(prompt.candidates))
            for _, order in copies:
                s = np.asarray(scores[k], dtype=float)
                k += 1
                if self.statistic == "softmax":
                    dist[order] += _softmax(s, self.temperature)
                else:
                    dist[order[int(np.argmax(s))]] += 1.0
            out.append(dist / dist.sum())
        return out

    def score(self, prompts: Sequence[RecPrompt]) -> np.ndarray:
        """``1 - normalised entropy`` per prompt (in [0, 1]; higher = more suspicious)."""
        dists = self.distributions(prompts)
        return np.array(
            [1.0 - _entropy(d) / math.log(len(d)) if len(d) > 1 else 1.0 for d in dists], dtype=float
        )

    def fit(self, clean_prompts: Sequence[RecPrompt]) -> StripDetector:
        """Calibrate on clean prompts: their history titles become the perturbation pool (unless
        a pool was given) and the threshold flags at most ``frr`` of them (unless given)."""
        if not clean_prompts:
            raise ConfigError("STRIP needs clean prompts to calibrate on")
        if not self.pool:
            self.pool = sorted({t for p in clean_prompts for t in p.history})
        self.calibration_scores = self.score(clean_prompts)
        if self._explicit is None:
            from ...eval.detection import threshold_at_fpr

            self.threshold = threshold_at_fpr(self.calibration_scores, self.frr)
        return self

    def flag(self, prompts: Sequence[RecPrompt]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and 0/1 flags (score >= threshold)."""
        scores = self.score(prompts)
        return scores, (scores >= self.threshold).astype(int)


def top1(scorer: Scorer, prompts: Sequence[RecPrompt]) -> list[int]:
    """The victim's choice (candidate position) on each unperturbed prompt."""
    return [int(np.argmax(s)) for s in scorer(list(prompts))] if prompts else []
