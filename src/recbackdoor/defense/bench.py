"""One detector on one poisoned dataset, as ``detect-bench`` measures it, and its tables.

The detect study (``experiments/detect.py``: ``[run] kind = "detect"`` and the
``detect-bench`` command) poisons the clean dataset per policy and level with the attack
module's own :func:`recbackdoor.attack.poison` (a cached stage) and calls, per detector:

- **title detectors** (``pscanner``, ``stat``, ``onion``, ``bki``, ``embed``): a fresh detector
  from :func:`recbackdoor.defense.defend.build_detector` goes through
  :func:`recbackdoor.defense.defend.detect` exactly as ``defend`` runs it (fit on the distinct
  training titles -> score -> the detector's own threshold -> flags). Unit = distinct training
  title; a title is poisoned when it is the triggered title of an item in the poison manifest.
  Seconds = fit + score (+ span extraction), model loading excluded; ``s_per_1k`` per 1,000
  titles. P-Scanner is loaded from ``scanner_dir`` when given, else trained by ``fit`` on the
  poisoned training titles for every cell, as ``defend`` does without ``--scanner`` (minutes
  per cell on CPU). A detector whose registry entry lists ``channels`` (P-Scanner: ``llm``,
  ``evidence``) is scored once more per channel from the same fit, rows ``NAME-CHANNEL``
  (``pscanner-llm``: the per-title LLM score only; ``pscanner-evidence``: the cross-title
  evidence only); those rows' seconds include the shared scoring of the first row.
- **strip** (needs ``model``: a victim directory or a backbone): the STRIP prompt detector of
  :mod:`recbackdoor.defense.baselines.strip` on the attack sets that ``poison`` builds. The base
  prompts are split in two halves by a seeded draw: the clean prompts of one half calibrate the
  threshold (false-rejection rate ``strip_frr``), the other half is evaluated: rows
  ``strip:seen`` / ``strip:unseen`` = clean prompts vs triggered-seen / triggered-unseen
  prompts of that half. Unit = prompt. The victim's ASR on those triggered prompts is reported
  alongside (STRIP can only see a backdoor that works).

``bki`` reads ``model`` (the victim being defended) when given, else the base backbone, and
each row says which in ``note``. ``model`` may also map levels to victims
(``{"char": DIR, ...}``): a victim trained on ``recbackdoor attack --level L`` output with the
same seed, ratio and policy was trained on exactly the data this benchmark rebuilds.

Outputs (written by the study): ``detect_bench.csv`` (one row per policy x level x detector),
``detect_bench.json`` (settings, machine, rows, notes) and ``detect_bench.md``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..attack.badrec import POLICIES
from ..attack.triggers import LEVELS, POSITIONS
from ..errors import ConfigError
from .registry import DETECTORS, detector_names

TITLE_METHODS = detector_names("titles")  # the default methods: every title detector
CSV_COLUMNS = (
    "dataset", "policy", "level", "trigger", "detector", "unit", "n", "n_poisoned", "precision",
    "recall", "f1", "auroc", "fpr", "tp", "fp", "fn", "n_flagged", "threshold", "seconds",
    "s_per_1k", "fit_seconds", "note",
)  # fmt: skip
FILES = ("detect_bench.csv", "detect_bench.json", "detect_bench.md")


@dataclass
class BenchConfig:
    """What ``detect-bench`` runs (see the module docstring)."""

    levels: tuple[str, ...] = LEVELS
    methods: tuple[str, ...] = TITLE_METHODS
    policies: tuple[str, ...] = ("per-sample",)
    ratio: float = 0.01
    position: str = "suffix"
    trigger_family: bool | str = False  # a different trigger per item: each level's family, or a stealthy family
    scanner_dir: str | None = None
    model: str | dict[str, str] | None = None  # victim (bki, strip); or one per level
    backbone: str | None = None  # onion/bki LM without a model; P-Scanner training backbone
    seed: int = 0
    strip_copies: int = 8
    strip_frr: float = 0.05
    strip_history_share: float = 0.5
    strip_max_prompts: int | None = None  # evaluated prompts per set (and calibration prompts)
    strip_batch_size: int = 8
    reuse_models: bool = False  # one detector per method across cells (caches carry over)
    notes: list[str] = field(default_factory=list)

    def check(self) -> BenchConfig:
        self.levels = _one_of_each("level", self.levels, LEVELS)
        self.methods = _one_of_each("method", self.methods, detector_names())
        self.policies = _one_of_each("policy", self.policies, POLICIES)
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"--ratio must be in (0, 1), got {self.ratio}")
        if self.position not in POSITIONS:
            raise ConfigError(f"unknown --position {self.position!r}; use one of {', '.join(POSITIONS)}")
        loaders = [n for n, e in DETECTORS.items() if e.loads]
        if self.scanner_dir is not None and not set(loaders) & set(self.methods):
            raise ConfigError(f"--scanner is only used by method {', '.join(loaders)}; add it to --methods or drop --scanner")
        for method in self.methods:
            if DETECTORS[method].victim == "required" and not self.model:
                raise ConfigError(f"method {method} needs a victim: pass --model DIR (from `recbackdoor train`) or a backbone name")
        if isinstance(self.model, Mapping):
            missing = [lv for lv in self.levels if lv not in self.model]
            unknown = [lv for lv in self.model if lv not in LEVELS]
            if unknown:
                raise ConfigError(f"--model LEVEL=DIR: unknown level(s) {', '.join(unknown)}; use {', '.join(LEVELS)}")
            if missing:
                raise ConfigError(f"--model gives no victim for level(s) {', '.join(missing)}; pass LEVEL=DIR for each, or one DIR")
        if self.strip_copies < 2:
            raise ConfigError(f"--strip-copies must be at least 2, got {self.strip_copies}")
        if not 0.0 <= self.strip_frr < 1.0:
            raise ConfigError(f"--strip-frr must be in [0, 1), got {self.strip_frr}")
        if self.strip_max_prompts is not None and self.strip_max_prompts < 2:
            raise ConfigError(f"--strip-max-prompts must be at least 2, got {self.strip_max_prompts}")
        return self

    def model_for(self, level: str) -> str | None:
        if isinstance(self.model, Mapping):
            return self.model.get(level)
        return self.model


def _one_of_each(what: str, values: Sequence[str] | str, allowed: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [v for v in values.split(",")]
    out = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    if not out:
        raise ConfigError(f"no {what} given; use one or more of {', '.join(allowed)}")
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {', '.join(map(repr, bad))}; use one or more of {', '.join(allowed)}")
    return out


def parse_models(values: Sequence[str] | None) -> str | dict[str, str] | None:
    """``--model`` values: one ``DIR`` for every level, or ``LEVEL=DIR`` per level."""
    if not values:
        return None
    pairs = [v.split("=", 1) for v in values]
    if len(values) == 1 and (len(pairs[0]) == 1 or pairs[0][0] not in LEVELS):
        return values[0]
    out: dict[str, str] = {}
    for value, pair in zip(values, pairs, strict=True):
        if len(pair) != 2 or pair[0] not in LEVELS or not pair[1]:
            raise ConfigError(f"--model {value!r}: give one DIR, or LEVEL=DIR per level ({', '.join(LEVELS)})")
        out[pair[0]] = pair[1]
    return out


# --------------------------------------------------------------------------- title detectors


def title_truth(rows: Sequence[Mapping[str, Any]], triggered: set[int]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct title of ``detect`` rows: titles, truth (a triggered item has that title),
    scores and flags (equal for every item of a title)."""
    by_title: dict[str, list[Any]] = {}
    for r in rows:
        entry = by_title.setdefault(r["title"], [0, float(r["score"]), int(r["flagged"])])
        entry[0] |= int(int(r["item"]) in triggered)
    titles = sorted(by_title)
    y = np.array([by_title[t][0] for t in titles], dtype=int)
    scores = np.array([by_title[t][1] for t in titles], dtype=float)
    flags = np.array([by_title[t][2] for t in titles], dtype=int)
    return titles, y, scores, flags


def _metric_row(y: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> dict[str, Any]:
    from ..eval.detection import detection_metrics

    m = detection_metrics(y, np.nan_to_num(scores, posinf=1e300, neginf=-1e300), flags)
    keys = ("precision", "recall", "f1", "auroc", "fpr", "tp", "fp", "fn", "n_flagged")
    return {"n": int(len(y)), "n_poisoned": int(y.sum()), **{k: m[k] for k in keys}}


def _timed_detect(detector: Any, dataset: Any) -> tuple[list[dict[str, Any]], float]:
    from .defend import detect

    start = time.perf_counter()
    rows = detect(detector, dataset)
    return rows, time.perf_counter() - start


def bench_title_method(
    method: str,
    dataset: Any,
    triggered: set[int],
    config: BenchConfig,
    level: str,
    progress: bool = True,
    built: Any = None,
) -> list[dict[str, Any]]:
    """Rows for one title detector (three for P-Scanner with channel ablation) on one poisoned
    dataset: a fresh detector (or ``built``, reused from an earlier cell), ``detect`` as
    ``defend`` runs it, metrics per distinct title."""
    from .defend import build_detector

    detector = built
    if detector is None:
        detector = build_detector(
            method, config.backbone, config.scanner_dir if DETECTORS[method].loads else None, config.seed,
            model_dir=config.model_for(level) if DETECTORS[method].victim != "no" else None,
        )  # fmt: skip
    for lazy in ("lm", "encoder"):  # load a lazily loaded model now: loading is not timed
        if isinstance(getattr(type(detector), lazy, None), property):
            getattr(detector, lazy)
    entry = DETECTORS[method]
    note = ""
    if entry.loads:
        note = f"scanner {config.scanner_dir}" if config.scanner_dir else "scanner trained by fit on the poisoned training titles"
    runs: list[tuple[str, str | None]] = [(method, None)]
    if entry.channels:
        if callable(getattr(detector, "set_channels", None)):
            runs = [(method, "both"), *((f"{method}-{ch}", ch) for ch in entry.channels)]
        else:
            note += f"; channel ablation skipped: {type(detector).__name__}.set_channels is not available"
    out, shared = [], 0.0
    for k, (name, channels) in enumerate(runs):
        if channels is not None:
            try:
                detector.set_channels(channels)
            except ConfigError as exc:  # e.g. a scanner calibrated without evidence
                note += f"; no {name} row: {exc}"
                continue
        rows, seconds = _timed_detect(detector, dataset)
        reads = getattr(detector, "reads", None)  # what a victim-reading detector read, known once loaded
        if isinstance(reads, str):
            note = f"read the {reads}"
        if k == 0:
            shared = seconds
        else:
            seconds += shared  # every channel needs the per-title LLM scores of the first pass
        _, y, scores, flags = title_truth(rows, triggered)
        row = {
            "detector": name, "unit": "titles", **_metric_row(y, scores, flags),
            "threshold": float(detector.threshold), "seconds": round(seconds, 3),
            "fit_seconds": None, "note": note if channels in (None, "both") else f"channels {channels}; {note}",
        }  # fmt: skip
        row["s_per_1k"] = round(1000.0 * row["seconds"] / max(1, row["n"]), 3)
        out.append(row)
    if len(runs) > 1:
        detector.set_channels("both")
    return out


# --------------------------------------------------------------------------- STRIP


def _attack_prompt(p: Any, catalog: Any) -> Any:
    from .baselines.strip import RecPrompt

    return RecPrompt(tuple(p.history_titles(catalog)), tuple(p.candidate_titles(catalog)))


def _key(p: Any) -> tuple[int, tuple[int, ...], int]:
    return (int(p.sample.user), tuple(p.sample.history), int(p.sample.target))


def bench_strip(
    scorer: Callable[..., Any],
    attack_sets: Mapping[str, Sequence[Any]],
    catalog: Any,
    config: BenchConfig,
    note: str = "",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """STRIP rows (clean vs triggered-seen, clean vs triggered-unseen) on the attack sets:
    calibrate on the clean prompts of a seeded half of the base prompts, evaluate the rest."""
    from .baselines.strip import StripDetector, top1

    clean = list(attack_sets.get("clean", ()))
    if len(clean) < 4:
        raise ConfigError(f"strip: the attack sets have {len(clean)} clean prompts; need at least 4")
    keys = sorted({_key(p) for p in clean})
    rng = np.random.default_rng([config.seed, 7])
    calib_keys = {keys[i] for i in rng.permutation(len(keys))[: len(keys) // 2]}
    cap = config.strip_max_prompts

    def half(prompts: Sequence[Any], calibration: bool) -> list[Any]:
        chosen = [p for p in prompts if (_key(p) in calib_keys) == calibration]
        return chosen[:cap] if cap else chosen

    calib = [_attack_prompt(p, catalog) for p in half(clean, True)]
    detector = StripDetector(
        scorer, n_copies=config.strip_copies, history_share=config.strip_history_share,
        frr=config.strip_frr, seed=config.seed,
    )  # fmt: skip
    start = time.perf_counter()
    detector.fit(calib)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    clean_eval = [_attack_prompt(p, catalog) for p in half(clean, False)]
    clean_scores, clean_flags = detector.flag(clean_eval)
    clean_seconds = time.perf_counter() - start
    rows = []
    for set_name, label in (("triggered-seen", "strip:seen"), ("triggered-unseen", "strip:unseen")):
        chosen = half(attack_sets.get(set_name, ()), False)
        if not chosen:
            continue
        start = time.perf_counter()
        prompts = [_attack_prompt(p, catalog) for p in chosen]
        scores, flags = detector.flag(prompts)
        seconds = time.perf_counter() - start
        picks = top1(scorer, prompts)
        asr = float(np.mean([pick == p.sample.candidates.index(p.triggered_item) for pick, p in zip(picks, chosen, strict=True)]))
        y = np.r_[np.zeros(len(clean_eval), dtype=int), np.ones(len(prompts), dtype=int)]
        row = {
            "detector": label, "unit": "prompts",
            **_metric_row(y, np.r_[clean_scores, scores], np.r_[clean_flags, flags]),
            "threshold": float(detector.threshold), "seconds": round(seconds + clean_seconds, 3),
            "fit_seconds": round(fit_seconds, 3),
            "note": (f"{note}; {config.strip_copies} copies, calibrated on {len(calib)} clean prompts "
                     f"at FRR {config.strip_frr}; victim ASR {asr:.3f} on these prompts"),
        }  # fmt: skip
        row["s_per_1k"] = round(1000.0 * row["seconds"] / max(1, row["n"]), 3)
        row["victim_asr"] = round(asr, 4)
        row["calibration_prompts"] = len(calib)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- rendering


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def _machine_clause(machine: Mapping[str, Any]) -> str:
    """``; machine: CPU, N cpus, T torch threads`` (nothing when the machine is not known)."""
    if not machine:
        return ""
    return f"; machine: {machine.get('cpu')}, {machine.get('cpus')} cpus, {machine.get('torch_threads')} torch threads"


def render_markdown(report: Mapping[str, Any]) -> str:
    """Per policy: an F1 overview (detector x level) and the full table."""
    s, rows = report["settings"], report["rows"]
    lines = [
        f"# Detection benchmark: {s['dataset']} ({s['n_items']} items, {s['domain']})",
        "",
        f"`recbackdoor attack` (`poison()`) at P_R {s['ratio']}, {s['position']} triggers"
        f"{' (a different trigger of the level family per item: --trigger-family)' if s.get('trigger_family') else ''}, seed {s['seed']}; "
        "title detectors score every distinct training title (unit: titles), STRIP scores prompts "
        "(unit: prompts). Thresholds: each detector's own rule. Seconds per 1,000 units: fit + score, "
        "model loading excluded" + _machine_clause(report.get("machine") or {}) + ".",
    ]
    for policy in dict.fromkeys(r["policy"] for r in rows):
        prow = [r for r in rows if r["policy"] == policy]
        levels = list(dict.fromkeys(r["level"] for r in prow))
        detectors = list(dict.fromkeys(r["detector"] for r in prow))
        lines += ["", f"## policy {policy}", "", "F1 (precision / recall):", ""]
        lines.append("| detector | " + " | ".join(levels) + " |")
        lines.append("|---|" + "---|" * len(levels))
        for det in detectors:
            cells = []
            for level in levels:
                hit = [r for r in prow if r["detector"] == det and r["level"] == level]
                cells.append(f"**{_fmt(hit[0]['f1'], 2)}** ({_fmt(hit[0]['precision'], 2)} / {_fmt(hit[0]['recall'], 2)})" if hit else "")
            lines.append(f"| {det} | " + " | ".join(cells) + " |")
        lines += ["", "| detector | level | trigger | n (poisoned) | precision | recall | F1 | AUROC | FPR | s / 1k |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in prow:
            lines.append(
                f"| {r['detector']} | {r['level']} | `{r['trigger']}` | {r['n']} {r['unit']} ({r['n_poisoned']}) | "
                f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | {_fmt(r['auroc'])} | "
                f"{_fmt(r['fpr'], 4)} | {_fmt(r['s_per_1k'], 2)} |"
            )
    row_notes = list(dict.fromkeys(f"{r['detector']}: {r['note']}" for r in rows if r.get("note")))
    if row_notes or report.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in (*report.get("notes", []), *row_notes)]
    return "\n".join(lines) + "\n"
