"""``defend``: scan a (possibly poisoned) dataset's training titles, flag, sanitize, write.

The detector sees only the distinct titles of the items in the training split and the domain;
``poison_manifest.json``, when present in the input directory, is read only afterwards, to
measure the detection per item and the samples removed. Method ``pscanner`` uses a trained
scanner (``scanner_dir``) or, without one, trains a scanner on the training titles first.
Output directory (atomic):

    catalog/train/valid/test parquet + manifest.json   the sanitized dataset
    detections.json      one row per scored item: item, title, score, flagged[, span]
    defense_report.json  detector, threshold, counts, sanitize report[, detection metrics]
    attack_sets/         copied from the input, if present (valid/test are never changed)
    victim/              with ``retrain``: the victim trained on the sanitized data (or
                         ``victim_out``), and its evaluation in ``victim/eval-defended/``

``retrain``: once the sanitized dataset is written, train the victim on it (the kind of
``model_dir``, ``tallrec`` without one; options ``train_options`` through
:func:`recbackdoor.models.lora.make_train_config`), evaluate it with the ``score`` protocol on
the attack sets (:func:`recbackdoor.eval.evaluate.evaluate_model`, ``attack_sets=True``; the
test split when the input has no attack sets) and add ``after_defense`` (HR@1, ASR per
triggered set, ...) to ``defense_report.json``. With ``model_dir`` (the victim trained on the
poisoned data) that victim is evaluated on the same prompts as ``before_defense``. If training
fails the sanitized dataset stays written and the report says ``retrain: failed``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import load_dataset, write_dataset_files
from ..data.types import SplitDataset
from ..errors import ConfigError
from ..io_utils import atomic_output_dir, check_output_dir, read_json, write_json
from .base import Detector
from .registry import BuildOptions, detector_entry, detector_names
from .sanitize import check_policy, sanitize

POISON_MANIFEST = "poison_manifest.json"


def check_method(method: str) -> str:
    """``method`` if it is a registered title detector (``registry.DETECTORS``)."""
    names = detector_names("titles")
    if method not in names:
        raise ConfigError(f"unknown defense method {method!r}; use one of {', '.join(names)}")
    return method


def training_items(dataset: SplitDataset) -> list[int]:
    """Every item the training split shows the model (history, candidates, target)."""
    items: set[int] = set()
    for s in dataset.train:
        items.update(s.history)
        items.update(s.candidates)
        items.add(s.target)
    return sorted(items)


def build_detector(
    method: str,
    backbone: str | None = None,
    scanner_dir: str | os.PathLike | None = None,
    seed: int = 0,
    threshold: float | None = None,
    model_dir: str | os.PathLike | None = None,
) -> Detector:
    """The title detector ``method``, built by its ``registry.DETECTORS`` entry (P-Scanner:
    loaded from ``scanner_dir``, else trained by ``fit`` on the catalog). ``model_dir``: the
    victim being defended, read by the detectors whose entry says so (``bki``); without it BKI
    reads the base ``backbone``."""
    options = BuildOptions(backbone=backbone, seed=seed, threshold=threshold,
                           scanner_dir=None if scanner_dir is None else str(scanner_dir),
                           model_dir=None if model_dir is None else str(model_dir))
    return detector_entry(check_method(method), "titles").build(options)


def _spans(detector: Any, titles: list[str]) -> list[str | None]:
    """The detected trigger span of each title, where the detector can say (``spans``, or
    P-Scanner's ``explain`` fragment); ``None`` elsewhere."""
    if callable(getattr(detector, "spans", None)):
        return list(detector.spans(titles))
    if callable(getattr(detector, "explain", None)):
        return [detector.explain(t).get("fragment") or None for t in titles]
    return [None] * len(titles)


def detect(
    detector: Detector, dataset: SplitDataset
) -> list[dict[str, Any]]:
    """Fit on the training items' distinct titles, score them; one row per training item
    (``span``: the detected trigger, for flagged titles whose detector knows it)."""
    items = training_items(dataset)
    titles = [dataset.catalog.titles[i] for i in items]
    distinct = sorted(set(titles))
    detector.fit(distinct, dataset.catalog.domain)
    scores = np.asarray(detector.score(distinct), dtype=float)
    flagged = [t for t, s in zip(distinct, scores, strict=True) if s >= detector.threshold]
    spans = dict(zip(flagged, _spans(detector, flagged), strict=True))
    by_title = dict(zip(distinct, scores.tolist(), strict=True))
    rows = []
    for item, title in zip(items, titles, strict=True):
        score = by_title[title]
        row: dict[str, Any] = {
            "item": item,
            "title": title,
            "score": score,
            "flagged": bool(score >= detector.threshold),
        }
        if spans.get(title) is not None:
            row["span"] = spans[title]
        rows.append(row)
    return rows


def defend(
    data_dir: str | os.PathLike,
    method: str = "pscanner",
    out: str | os.PathLike = "defended",
    policy: str = "drop-target",
    backbone: str | None = None,
    scanner_dir: str | os.PathLike | None = None,
    seed: int = 0,
    threshold: float | None = None,
    force: bool = False,
    model_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    train_options: Mapping[str, Any] | None = None,
    eval_max_samples: int | None = None,
    victim_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Detect, sanitize and write (see the module docstring); returns the defense report.

    ``model_dir``: the victim being defended (read by ``bki``; with ``retrain`` also evaluated
    as the before-defense reference). ``retrain``/``train_options``/``eval_max_samples``/
    ``victim_out``: train and evaluate the victim on the sanitized data (module docstring).
    """
    from ..eval.detection import detection_metrics

    check_method(method)
    check_policy(policy)
    check_output_dir(out, force)
    if model_dir is not None:
        from ..victims import check_victim_dir

        check_victim_dir(model_dir)
    train_config = None
    if retrain:  # options are checked before the (long) detection
        from ..models.lora import make_train_config

        train_config = make_train_config(**{"seed": seed, **dict(train_options or {})})
        if eval_max_samples is not None and eval_max_samples < 1:
            raise ConfigError(f"--eval-max-samples must be at least 1, got {eval_max_samples}")
        if victim_out is not None:
            check_output_dir(victim_out, force)
    elif train_options:
        raise ConfigError("--train-options are used only with --retrain")
    data_dir = Path(data_dir)
    dataset = load_dataset(data_dir)
    manifest_path = data_dir / POISON_MANIFEST
    poison_manifest = read_json(manifest_path) if manifest_path.is_file() else None

    detector = build_detector(method, backbone, scanner_dir, seed, threshold, model_dir=model_dir)
    rows = detect(detector, dataset)
    flagged = [r["item"] for r in rows if r["flagged"]]
    spans = {r["item"]: r.get("span") for r in rows if r["flagged"]}
    sanitized, sanitize_report = sanitize(dataset, flagged, policy, spans, poison_manifest)

    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "detector": detector.name,
        "method": method,
        "backbone": getattr(detector, "backbone", backbone),
        "scanner_dir": None if scanner_dir is None else str(scanner_dir),
        "seed": seed,
        "threshold": float(detector.threshold),
        "threshold_rule": "given" if threshold is not None else "detector default",
        "counts": {
            "scored_items": len(rows),
            "distinct_titles": len({r["title"] for r in rows}),
            "flagged_items": len(flagged),
        },
        "sanitize": sanitize_report,
        "metrics": None,
    }
    reads = getattr(detector, "reads", None)
    if isinstance(reads, str):  # bki: the victim it read, or the base-backbone fallback
        report["lm"] = reads
    if poison_manifest is not None:
        triggered = {int(i) for i in poison_manifest.get("triggered_items", [])}
        y = [int(r["item"] in triggered) for r in rows]
        report["metrics"] = detection_metrics(
            y, [r["score"] for r in rows], [int(r["flagged"]) for r in rows]
        )
        report["metrics"]["triggered_not_in_train"] = len(triggered - {r["item"] for r in rows})

    if retrain:
        report["retrain"] = "running"  # what a killed run leaves behind
    with atomic_output_dir(out, force=force) as tmp:
        write_dataset_files(sanitized, tmp)
        write_json(tmp / "detections.json", rows)
        write_json(tmp / "defense_report.json", report)
        if (data_dir / "attack_sets").is_dir():
            shutil.copytree(data_dir / "attack_sets", tmp / "attack_sets")
    if retrain:
        assert train_config is not None
        victim_dir = Path(victim_out) if victim_out is not None else Path(out) / "victim"
        report["retrain"] = "failed"
        try:
            report.update(retrain_and_evaluate(Path(out), victim_dir, train_config, eval_max_samples, model_dir, force))
            report["retrain"] = "done"
        finally:  # the sanitized dataset stays written either way; the report says how training ended
            write_json(Path(out) / "defense_report.json", report)
    return report


AFTER_KEYS = ("HR@1", "HR@1_all", "ValidRatio", "HR@5", "NDCG@10", "ASR", "n_samples")


def retrain_and_evaluate(
    data_dir: Path,
    victim_dir: Path,
    train_config: Any,
    eval_max_samples: int | None = None,
    model_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train a victim of the same kind as ``model_dir`` (``tallrec`` without one) on
    ``data_dir`` into ``victim_dir``, evaluate it (and ``model_dir`` for reference) on the
    attack sets; the report's new entries."""
    import time

    from ..eval.evaluate import evaluate_model
    from ..victims import victim_kind, victim_trainer

    victim = (victim_kind(model_dir) if model_dir is not None else None) or "tallrec"
    has_sets = (data_dir / "attack_sets").is_dir()
    start = time.perf_counter()
    victim_trainer(victim)(data_dir, victim_dir, train_config, force=force)
    train_seconds = time.perf_counter() - start

    def run(model: str | os.PathLike, eval_out: Path) -> dict[str, Any]:
        metrics = evaluate_model(
            str(model), data_dir, protocol="score", attack_sets=has_sets, max_samples=eval_max_samples,
            out=eval_out, force=True, progress=True,
        )  # fmt: skip
        return {k: metrics.get(k) for k in AFTER_KEYS} | {"eval_dir": str(eval_out)}

    after = run(victim_dir, victim_dir / "eval-defended")
    after.update(victim=victim, victim_dir=str(victim_dir), train_seconds=round(train_seconds, 2),
                 train_config=train_config.model_dump(mode="json"), attack_sets=has_sets)  # fmt: skip
    out: dict[str, Any] = {"after_defense": after}
    if model_dir is not None:
        before = run(model_dir, victim_dir / "eval-before-defense")
        out["before_defense"] = before | {"victim_dir": str(model_dir)}
    return out
