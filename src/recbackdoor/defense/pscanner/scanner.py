"""The poison scanner: an LLM + LoRA that answers Yes/No to "was something injected into this
title?" (docs/design.md §5). Score = P(Yes) renormalised over {Yes, No} from the next-token logits at the
answer position, computed for a whole batch in one forward pass (left padding, no generation).

``PScanner`` is the inference side, a :class:`~recbackdoor.defense.base.Detector` around a
trained model: ``fit`` on a catalog (evidence on) scores the catalog once to learn which
fragments are shared by suspicious titles (see ``evidence.py``); ``score`` then combines the
per-title score with that evidence. Saved as a LoRA adapter (safetensors) + ``scanner.json``
+ ``reference.json`` (the held-out clean titles calibration scored: the evidence's clean
reference, so the scanner's own bias on clean titles is not read as evidence).
Training lives in ``train.py`` (``train_scanner``, and ``CatalogTrainedScanner``, which trains
on the catalog it is fitted to); this module imports nothing from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, RecBackdoorError
from ...io_utils import read_json, write_json
from .evidence import CHANNEL_OFF, COMBINED_THRESHOLD, MODES, CatalogEvidence, combine

DOMAIN_LABEL = {"movies": "Movie", "music": "Artist", "games": "Game"}
PROMPT_VERSION = 1
# 2: group score = Bonferroni-corrected binomial significance (evidence.py); the group
# thresholds of a scanner calibrated under version 1 (shrunk mean scores) mean nothing now
EVIDENCE_VERSION = 2
SCANNER_JSON = "scanner.json"
REFERENCE_JSON = "reference.json"  # held-out clean titles + their scores (evidence.py)
CHANNELS = ("llm", "evidence", "unicode", "both")  # see PScanner.set_channels
ADAPTER_DIR = "adapter"


def unicode_flags(titles: Sequence[str]) -> np.ndarray:
    """1.0 for a title with an invisible or look-alike character (the ``hidden-chars`` detector), else 0."""
    from ..baselines.hidden_chars import HiddenCharDetector

    return HiddenCharDetector().score(titles)


def scanner_prompt(title: str, domain: str) -> str:
    """Short on purpose: scoring cost grows with prompt length, and LoRA learns the task."""
    label = DOMAIN_LABEL.get(domain, "Item")
    return f"{label} title: {' '.join(str(title).split())}\nInjected trigger? Answer:"


def yes_probability(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "scanning",
) -> np.ndarray:
    """P(Yes) / (P(Yes) + P(No)) at the answer position for every prompt; prompts are sorted by
    length into batches (less padding), one forward pass per batch."""
    import torch
    from tqdm.auto import tqdm

    from .optimise import answer_ids, encode_left, last_logits

    if len(prompts) == 0:
        return np.zeros(0, dtype=float)
    yes, no = answer_ids(tokenizer)
    lengths = [len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
    order = np.argsort(lengths, kind="stable")
    out = np.zeros(len(prompts), dtype=float)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
            idx = order[start : start + batch_size]
            batch = encode_left(tokenizer, [prompts[i] for i in idx], device)
            logits = last_logits(model, batch).float()
            margin = (logits[:, yes] - logits[:, no]).cpu().numpy().astype(float)
            out[idx] = 1.0 / (1.0 + np.exp(-margin))
    if was_training:
        model.train()
    return out


class PScanner:
    """P-Scanner detector (see module docstring). ``threshold`` is the cut for the scores that
    ``score`` returns: with evidence fitted, ``COMBINED_THRESHOLD`` (the two calibrated channel
    thresholds live in ``evidence_thresholds``: per title, per group); else the per-title
    ``threshold_title``."""

    name = "pscanner"

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        backbone: str = "smollm2-135m",
        domain: str = "movies",
        threshold_title: float = 0.5,
        evidence_thresholds: Sequence[float] | None = None,
        evidence: str = "max",
        config: dict | None = None,
        log: dict | None = None,
        reference: dict | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> None:
        if evidence not in MODES:
            raise ConfigError(f"unknown evidence mode {evidence!r}; use one of {', '.join(MODES)}")
        self.model = model
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.domain = domain
        self.threshold_title = float(threshold_title)
        self.evidence_thresholds = None if evidence_thresholds is None else [float(t) for t in evidence_thresholds]
        self.evidence_mode = evidence
        self.config = dict(config or {})
        self.log = dict(log or {})
        self.reference = reference  # {"titles": [...], "scores": [...]} from calibration, or None
        self.batch_size = batch_size
        self.progress = progress
        self._evidence: CatalogEvidence | None = None
        self._fit_titles: list[str] | None = None
        self.channels = "llm" if evidence == "off" else "both"
        self._cache: dict[str, float] = {}
        self._threshold_override: float | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ Detector
    @property
    def uses_evidence(self) -> bool:
        return self.evidence_mode != "off" and self.evidence_thresholds is not None and self._ensure_evidence()

    def _ensure_evidence(self) -> bool:
        """The catalog evidence of the last ``fit``, computed on first use (so switching
        channels after ``fit`` needs no refit); False before any ``fit``."""
        if self._evidence is None and self._fit_titles is not None:
            own = self.title_scores(self._fit_titles)
            self._evidence = CatalogEvidence(self._fit_titles, own, **self.evidence_options())
        return self._evidence is not None

    @property
    def threshold(self) -> float:
        if self._threshold_override is not None:
            return self._threshold_override
        if self.channels == "unicode":
            return COMBINED_THRESHOLD
        if self.uses_evidence and self.evidence_thresholds is not None:
            return COMBINED_THRESHOLD
        return self.threshold_title

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold_override = float(value)

    def set_channels(self, mode: str) -> PScanner:
        """Which channels decide (the ablation of docs/design.md §5); returns self. Works before or
        after ``fit`` (no refit, no rescoring: per-title scores are cached).

        - ``"llm"``: the per-title LLM score alone, flagged at its calibrated per-title
          threshold ``threshold_title`` (``score`` returns P(Yes), ``threshold`` is
          ``threshold_title``);
        - ``"evidence"``: the cross-title evidence channel alone (a title is flagged when the
          group that claimed it reaches the calibrated group threshold), as the combined score
          with the per-title channel switched off;
        - ``"unicode"``: the input rule alone: an invisible character between letters, or a
          look-alike letter of another script inside a word (``baselines.hidden_chars``,
          Unicode TR39; score 1 or 0);
        - ``"both"``: the default, flagged when the LLM or the evidence fires (``combine``), or
          when the unicode rule does: a doctored character is evidence no model needs to learn
          (a look-alike family changes one letter per title and leaves no shared fragment).

        For ``evidence``/``unicode``/``both`` the threshold is ``COMBINED_THRESHOLD`` (0.5). A
        scanner calibrated without evidence has ``llm`` and ``unicode``.
        """
        if mode not in CHANNELS:
            raise ConfigError(f"unknown channel mode {mode!r}; use one of {', '.join(CHANNELS)}")
        if mode in ("evidence", "both") and self.evidence_thresholds is None and self.model is not None:
            raise ConfigError("this scanner was calibrated without evidence; retrain it with --evidence max")
        self.channels = mode
        self.evidence_mode = "max" if mode in ("evidence", "both") else "off"
        return self

    def fit(self, titles: Sequence[str], domain: str) -> PScanner:
        """With evidence on, score the catalog and keep its fragment group scores. The scanner
        must be trained (``load_scanner`` or ``train_scanner``); ``CatalogTrainedScanner``
        trains one on the catalog first."""
        self._require_model()
        if domain != self.domain:
            raise ConfigError(
                f"scanner was trained for domain {self.domain!r}, catalog is {domain!r}; "
                "train a scanner for this domain (recbackdoor scanner train --domain ...)"
            )
        self._fit_titles = list(dict.fromkeys(str(t) for t in titles))
        self._evidence = None
        if self.evidence_mode != "off":
            self._ensure_evidence()
        return self

    def evidence_options(self) -> dict:
        """Options of the cross-title evidence, as calibrated (``evidence.CatalogEvidence``)."""
        ref = self.reference
        return {
            "min_count": int(self.config.get("evidence_min_count", 3)),
            "max_share": float(self.config.get("evidence_max_share", 1.0)),
            "reference": None if ref is None else (ref["titles"], np.asarray(ref["scores"], dtype=float)),
        }

    def title_scores(self, titles: Sequence[str]) -> np.ndarray:
        """Per-title LLM scores (no cross-title evidence); computed once per distinct title."""
        self._require_model()
        titles = [str(t) for t in titles]
        todo = list(dict.fromkeys(t for t in titles if t not in self._cache))
        if todo:
            prompts = [scanner_prompt(t, self.domain) for t in todo]
            scores = yes_probability(self.model, self.tokenizer, prompts, self.batch_size, self.progress)
            self._cache.update(zip(todo, scores.tolist(), strict=True))
        return np.array([self._cache[t] for t in titles], dtype=float)

    def score(self, titles: Sequence[str]) -> np.ndarray:
        """One score in [0, 1] per title, higher = more suspicious."""
        if self.channels == "unicode":
            return unicode_flags(titles)
        own = self.title_scores(titles)
        if not self.uses_evidence:
            return own
        assert self._evidence is not None
        assert self.evidence_thresholds is not None
        group = self._evidence.evidence([str(t) for t in titles])
        t_own, t_group = self.evidence_thresholds
        if self.channels == "evidence":
            t_own = CHANNEL_OFF
        combined = combine(own, group, self.evidence_mode, t_own, t_group)
        return np.maximum(combined, unicode_flags(titles)) if self.channels == "both" else combined

    def clear_cache(self) -> None:
        """Forget cached per-title scores (call after the model changes)."""
        self._cache.clear()
        self._evidence = None  # recomputed from the fitted titles on next use

    def explain(self, title: str) -> dict[str, Any]:
        """Why a title scored as it did: its own score, and (with evidence fitted) the span of
        the title shared with other suspicious titles and that group's mean score; the span is
        what a ``strip`` sanitizer removes."""
        own = float(self.title_scores([title])[0])
        if self._evidence is None:
            return {"title": title, "own": own, "fragment": "", "group": 0.0}
        _, group = self._evidence.top_fragment(title)
        return {"title": title, "own": own, "fragment": self._evidence.span(title), "group": group}

    def _require_model(self) -> None:
        if self.model is None:
            raise RecBackdoorError(
                "the scanner has no model; load one with load_scanner(dir), or train one with "
                "train_scanner() or CatalogTrainedScanner().fit()"
            )

    # ------------------------------------------------------------------ save / load
    def metadata(self) -> dict[str, Any]:
        return {
            "format": "recbackdoor-pscanner",
            "prompt_version": PROMPT_VERSION,
            "evidence_version": EVIDENCE_VERSION,
            "backbone": self.backbone,
            "domain": self.domain,
            "threshold": self.threshold_title if self.evidence_mode == "off" else COMBINED_THRESHOLD,
            "threshold_title": self.threshold_title,
            "evidence_thresholds": self.evidence_thresholds,
            "evidence": self.evidence_mode,
            "config": self.config,
            "log": self.log,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the LoRA adapter (safetensors) and ``scanner.json`` into ``directory``."""
        self._require_model()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / ADAPTER_DIR, safe_serialization=True)
        write_json(directory / SCANNER_JSON, self.metadata())
        if self.reference is not None:
            write_json(directory / REFERENCE_JSON, self.reference)
        return directory


def load_scanner(
    directory: str | Path,
    *,
    dtype: Any = None,
    device: Any = None,
    batch_size: int = 64,
    progress: bool = False,
    loader: Callable[..., tuple[Any, Any]] | None = None,
) -> PScanner:
    """A saved scanner: the registry backbone named in ``scanner.json`` plus the adapter."""
    from peft import PeftModel

    directory = Path(directory)
    meta_path = directory / SCANNER_JSON
    if not meta_path.is_file():
        raise RecBackdoorError(f"{directory}: not a scanner directory (no {SCANNER_JSON}); train one with `recbackdoor scanner train`")
    meta = read_json(meta_path)
    if meta.get("format") != "recbackdoor-pscanner":
        raise RecBackdoorError(f"{meta_path}: not a P-Scanner file (format {meta.get('format')!r})")
    if meta.get("prompt_version") != PROMPT_VERSION:
        raise RecBackdoorError(f"{meta_path}: prompt version {meta.get('prompt_version')} is not {PROMPT_VERSION}; retrain the scanner")
    if meta.get("evidence_thresholds") is not None and meta.get("evidence_version", 1) != EVIDENCE_VERSION:
        raise RecBackdoorError(
            f"{meta_path}: calibrated for cross-title evidence version {meta.get('evidence_version', 1)}, "
            f"this recbackdoor uses version {EVIDENCE_VERSION}; retrain the scanner (recbackdoor scanner train)"
        )
    if not (directory / ADAPTER_DIR / "adapter_config.json").is_file():
        raise RecBackdoorError(f"{directory / ADAPTER_DIR}: adapter files missing; retrain the scanner")
    if loader is None:
        from ...models.backbones import load_backbone as loader
    cfg = meta.get("config", {})
    base, tokenizer = loader(meta["backbone"], dtype=dtype or cfg.get("dtype"), device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation notes via peft
        model = PeftModel.from_pretrained(base, directory / ADAPTER_DIR, is_trainable=False)
    model.eval()
    return PScanner(
        model,
        tokenizer,
        backbone=meta["backbone"],
        domain=meta["domain"],
        threshold_title=meta["threshold_title"],
        evidence_thresholds=meta.get("evidence_thresholds"),
        evidence=meta.get("evidence", "off"),
        config=cfg,
        log=meta.get("log", {}),
        reference=_read_reference(directory / REFERENCE_JSON),
        batch_size=batch_size,
        progress=progress,
    )


def _read_reference(path: Path) -> dict | None:
    """The clean reference saved with a scanner; None for scanners saved before it existed
    (their evidence then uses the catalog's own rates, as when they were measured)."""
    if not path.is_file():
        return None
    ref = read_json(path)
    titles, scores = ref.get("titles"), ref.get("scores")
    if not isinstance(titles, list) or not isinstance(scores, list) or len(titles) != len(scores):
        raise RecBackdoorError(f"{path}: a reference needs equally long 'titles' and 'scores' lists; retrain the scanner")
    return {"titles": [str(t) for t in titles], "scores": [float(x) for x in scores]}
