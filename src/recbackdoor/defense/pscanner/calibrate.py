"""Threshold calibration on a synthetic validation catalog (docs/design.md §5).

The validation set is what a scanned catalog looks like: held-out clean titles with a
realistic share of titles carrying one reused trigger, one catalog per (level, validation
trigger). Validation triggers are never trained on. Shares alternate between the two BadRec
makes: 3% (about 10 of 300 titles, as the ``fixed`` policy's 10 targets) and 20% (the
``per-sample`` policy at P_R 1% triggers 10-20% of a catalog), so the thresholds hold at both prevalences (a balanced
set would put them far too low). The per-title threshold is the best F1 on the pooled
catalogs; the two channel thresholds of the combined score maximise the mean F1 over the
catalogs, so the many titles of a 20% catalog do not outvote the 3% ones. Option: a target
FPR on the clean titles.

The best-F1 cut is moved to the middle (in logit space) of the gap below it, so the same
validation F1 leaves a margin for unseen triggers that score a little lower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...eval.detection import detection_metrics, threshold_at_fpr, threshold_best_f1
from .evidence import (
    CHANNEL_OFF,
    COMBINED_THRESHOLD,
    GROUP_OFF,
    MIN_GROUP_SCORE,
    CatalogEvidence,
    combine,
)
from .synth import insert_generated, poison_catalog

THRESHOLD_RULES = ("best-f1", "fpr")


@dataclass
class ValidationSet:
    """Clean held-out titles and BadRec-like catalogs built from them."""

    clean: list[str]
    catalogs: list[dict] = field(default_factory=list)  # level, trigger, titles, y

    def all_titles(self) -> list[str]:
        seen = dict.fromkeys(self.clean)
        for cat in self.catalogs:
            seen.update(dict.fromkeys(cat["titles"]))
        return list(seen)


def build_validation(
    clean: Sequence[str],
    triggers: dict[str, Sequence[str]],
    share: float | Sequence[float],
    rng: np.random.Generator,
) -> ValidationSet:
    """One catalog per (level, trigger): a share of ``clean`` carries the trigger. ``share``
    is one share or a cycle of them (trigger ``j`` of a level gets ``shares[j % len]``); the
    first cycle of triggers is inserted as BadRec does (suffix), later ones at random
    positions and glues."""
    shares = [float(share)] if isinstance(share, int | float) else [float(x) for x in share]
    val = ValidationSet(clean=list(clean))
    for level, trigs in triggers.items():
        for j, trig in enumerate(trigs):
            sh = shares[j % len(shares)]
            titles, y = poison_catalog(clean, trig, level, sh, rng, glue_random=j >= len(shares))
            val.catalogs.append({"level": level, "trigger": trig, "titles": titles, "y": y, "share": sh})
    return val


@dataclass
class ProbeSet:
    """A fixed yardstick for the adversarial rounds: held-out clean titles (never trained on,
    never calibrated on) and hidden triggers (never trained on). Per level, one "fixed"
    trigger is reused on ``fixed_copies`` titles (BadRec's make) and the others sit on one
    title each (an attacker who varies the trigger per item)."""

    titles: list[str]
    y: np.ndarray
    kind: list[str]  # clean | fixed | varied

    def metrics(self, scores: np.ndarray, threshold: float) -> dict:
        """Per-title F1 / recall / FPR at ``threshold`` and AUROC, overall and per kind."""
        from sklearn.metrics import roc_auc_score

        flags = (scores >= threshold).astype(int)
        m = detection_metrics(self.y, scores, flags)
        out = {k: m[k] for k in ("f1", "precision", "recall", "fpr", "auroc")}
        kind = np.asarray(self.kind)
        for name in ("fixed", "varied"):
            pick = (kind == name) | (kind == "clean")
            sel = self.y[pick] == 1
            if sel.any():
                out[f"auroc_{name}"] = float(roc_auc_score(self.y[pick], scores[pick]))
                out[f"recall_{name}"] = float(flags[pick][sel].mean())
        out["n"], out["n_poisoned"] = len(self.y), int(self.y.sum())
        return out


def build_probe(
    clean: Sequence[str], triggers: dict[str, Sequence[str]], rng: np.random.Generator, fixed_copies: int = 4
) -> ProbeSet:
    """The probe catalog: every clean title once, plus per level trigger 0 on ``fixed_copies``
    other clean titles and each further trigger on one (random positions and glues)."""
    titles, y, kind = list(clean), [0] * len(clean), ["clean"] * len(clean)
    for level, trigs in triggers.items():
        for j, trig in enumerate(trigs):
            copies = fixed_copies if j == 0 else 1
            for i in rng.choice(len(clean), size=min(copies, len(clean)), replace=False):
                titles.append(insert_generated(clean[int(i)], trig, level, rng))
                y.append(1)
                kind.append("fixed" if j == 0 else "varied")
    return ProbeSet(titles, np.asarray(y, dtype=int), kind)


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def with_margin(scores: np.ndarray, threshold: float, logit: bool = True) -> float:
    """Midpoint between ``threshold`` and the highest score below it (in logit space for
    probabilities, else linear): the flags on ``scores`` stay the same, the cut sits in the
    gap."""
    below = scores[scores < threshold]
    if len(below) == 0:
        return float(threshold)
    if not logit:
        return float(0.5 * (threshold + below.max()))
    mid = 0.5 * (_logit(threshold) + _logit(below.max()))
    return float(1.0 / (1.0 + np.exp(-mid)))


def choose_threshold(y: np.ndarray, scores: np.ndarray, clean_scores: np.ndarray, rule: str, target_fpr: float) -> float:
    if rule == "fpr":
        return threshold_at_fpr(clean_scores, target_fpr)
    if rule != "best-f1":
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}")
    return with_margin(scores, threshold_best_f1(y, scores))


def two_channel_thresholds(
    y: np.ndarray, own: np.ndarray, group: np.ndarray, clean_own: np.ndarray, clean_group: np.ndarray,
    rule: str, target_fpr: float, segments: np.ndarray | None = None, own_margin_logit: float = 0.0,
) -> tuple[float, float]:
    """Thresholds (own, group) for ``own >= t_own or group >= t_group``. Best F1: every pair of
    positive scores (plus "channel off") is tried; ties go to fewer flags. The per-title
    channel must flag no held-out clean title (``t_own`` above every ``clean_own``): at 1%
    prevalence a per-title F1 of 0.9 needs a false-positive rate near 0.1%, which ~500 clean
    validation titles cannot resolve: a cut that lets a few of them through flags many more
    clean titles in a real catalog. ``segments`` (catalog id of every title, sorted): maximise the mean F1 of
    the catalogs instead of the pooled F1. FPR rule: half the target FPR to each channel, on
    clean titles."""
    if rule == "fpr":
        return threshold_at_fpr(clean_own, target_fpr / 2), max(threshold_at_fpr(clean_group, target_fpr / 2), MIN_GROUP_SCORE)
    if rule != "best-f1":
        raise ValueError(f"unknown threshold rule {rule!r}; use one of {', '.join(THRESHOLD_RULES)}")
    pos = y == 1
    if not pos.any():
        return CHANNEL_OFF, GROUP_OFF
    strict = max(float(np.max(clean_own)) if len(clean_own) else 0.0, 0.0)
    if own_margin_logit > 0 and strict > 0:  # beyond the best clean title, by a margin
        strict = float(1.0 / (1.0 + np.exp(-(_logit(strict) + own_margin_logit))))
    cand_own = np.append(np.unique(own[pos & (own > strict)]), CHANNEL_OFF)
    cand_grp = np.append(np.unique(group[pos & (group > 0)]), GROUP_OFF)  # 0: no group
    by_own = own[None, :] >= cand_own[:, None]  # (a, n)
    by_grp = group[None, :] >= cand_grp[:, None]  # (b, n)
    n_pos = int(pos.sum())
    if segments is not None:
        segments = np.asarray(segments)
        starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])
        seg_pos = np.add.reduceat(pos.astype(int), starts)
    best_key: tuple = (-1.0, 0, 0.0)
    t_own, t_grp = CHANNEL_OFF, GROUP_OFF
    for j, b in enumerate(cand_grp):
        flags = by_own | by_grp[j][None, :]
        n_flag = flags.sum(axis=1)
        if segments is None:
            tp = (flags & pos[None, :]).sum(axis=1)
            f1 = 2 * tp / (n_flag + n_pos)
        else:  # mean of the per-catalog F1 (a catalog with no positive counts 1 if it flags none)
            tp_s = np.add.reduceat((flags & pos[None, :]).astype(int), starts, axis=1)
            fl_s = np.add.reduceat(flags.astype(int), starts, axis=1)
            den = fl_s + seg_pos[None, :]
            f1 = np.where(den > 0, 2 * tp_s / np.maximum(den, 1), 1.0).mean(axis=1)
        for i, a in enumerate(cand_own):
            key = (float(f1[i]), -int(n_flag[i]), float(a + b))  # best F1, then fewer flags
            if key > best_key:
                best_key, t_own, t_grp = key, float(a), float(b)
    t_own = t_own if t_own >= CHANNEL_OFF else with_margin(own, t_own)
    t_grp = t_grp if t_grp >= GROUP_OFF else max(with_margin(group, t_grp, logit=False), MIN_GROUP_SCORE)
    return t_own, t_grp


def calibrate(
    title_scores: Callable[[Sequence[str]], np.ndarray],
    val: ValidationSet,
    evidence_mode: str,
    rule: str = "best-f1",
    target_fpr: float = 0.01,
    evidence_options: dict | None = None,
    own_margin_logit: float = 0.0,
) -> dict:
    """Thresholds for the per-title score (``threshold_title``) and, with evidence, the two
    channel thresholds of the combined score (``evidence_thresholds``), with the validation
    metrics (pooled and per level) at those thresholds. The held-out clean titles and their
    scores are the evidence's clean reference (``report["reference"]``; evidence.py), here and
    in every catalog the scanner later scans."""
    titles = val.all_titles()
    own_all = dict(zip(titles, title_scores(titles).tolist(), strict=True))
    clean_own = np.array([own_all[t] for t in val.clean])
    reference = {"titles": list(val.clean), "scores": clean_own.tolist()}
    opts = {**(evidence_options or {}), "reference": (reference["titles"], clean_own)}
    ys, own, grp = [], [], []
    for cat in val.catalogs:
        o = np.array([own_all[t] for t in cat["titles"]])
        ys.append(cat["y"])
        own.append(o)
        if evidence_mode != "off":
            grp.append(CatalogEvidence(cat["titles"], o, **opts).evidence(cat["titles"]))
    y, s_own = np.concatenate(ys), np.concatenate(own)
    thr_title = choose_threshold(y, s_own, clean_own, rule, target_fpr)
    report: dict = {
        "rule": rule,
        "threshold_title": thr_title,
        "evidence_thresholds": None,
        "title": _metrics(val, ys, own, thr_title),
        "clean_fpr_title": float(np.mean(clean_own >= thr_title)),
        "reference": reference,
    }
    if evidence_mode != "off":
        clean_grp = CatalogEvidence(val.clean, clean_own, **opts).evidence(val.clean)
        segments = np.concatenate([np.full(len(g), k) for k, g in enumerate(grp)])
        t_own, t_grp = two_channel_thresholds(
            y, s_own, np.concatenate(grp), clean_own, clean_grp, rule, target_fpr, segments=segments,
            own_margin_logit=own_margin_logit,
        )
        comb = [combine(o, g, evidence_mode, t_own, t_grp) for o, g in zip(own, grp, strict=True)]
        report["evidence_thresholds"] = [t_own, t_grp]
        report["evidence"] = _metrics(val, ys, comb, COMBINED_THRESHOLD)
        clean_comb = combine(clean_own, clean_grp, evidence_mode, t_own, t_grp)
        report["clean_fpr_evidence"] = float(np.mean(clean_comb >= COMBINED_THRESHOLD))
    return report


def _metrics(val: ValidationSet, ys: list, scores: list, thr: float) -> dict:
    """Pooled and per-level F1/precision/recall/AUROC at ``thr``."""
    out: dict = {}
    groups: dict[str, list[int]] = {"all": list(range(len(ys)))}
    for i, cat in enumerate(val.catalogs):
        groups.setdefault(cat["level"], []).append(i)
    for name, idx in groups.items():
        y = np.concatenate([ys[i] for i in idx])
        s = np.concatenate([scores[i] for i in idx])
        m = detection_metrics(y, s, (s >= thr).astype(int))
        out[name] = {k: m[k] for k in ("f1", "precision", "recall", "auroc", "fpr")}
    return out
