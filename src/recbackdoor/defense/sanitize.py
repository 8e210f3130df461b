"""Remove the poison of flagged items from the training split (docs/design.md §5).

Policies:
- ``drop-target`` (default): drop training samples whose target is a flagged item. BadRec's
  fake samples all have a triggered target, so this removes them, plus the clean samples that
  happen to target a flagged item.
- ``drop-any``: drop training samples that mention a flagged item anywhere (history,
  candidates or target): more thorough, and costlier for clean data.
- ``strip``: keep every sample but restore flagged titles by removing the detected trigger
  span (``detected_triggers``: item -> span, from detectors that know it). A flagged item with
  no span, or whose span is not in its title, falls back to ``drop-target`` and is listed in
  the report.

valid/test samples are never removed (``strip`` changes titles in the catalog, which all splits
share). With a BadRec ``poison_manifest`` the report also counts fake and clean samples
removed and, for ``strip``, how many titles came back exactly as they were before the attack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..data.types import Sample, SplitDataset
from ..errors import ConfigError

POLICIES = ("drop-target", "drop-any", "strip")
_TIDY = " _-~|+/\\"  # separators left dangling at a cut


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"unknown sanitize policy {policy!r}; use one of {', '.join(POLICIES)}")
    return policy


def strip_span(title: str, span: str) -> str | None:
    """``title`` without ``span`` (at the end if it is there, else the start, else its first
    occurrence), tidying separators left at the cut; ``None`` if the span is absent or
    removing it would leave nothing."""
    span = span.strip()
    if not span:
        return None
    if title.endswith(span):
        pos = len(title) - len(span)
    elif title.startswith(span):
        pos = 0
    else:
        pos = title.find(span)
    if pos < 0:
        return None
    left, right = title[:pos].rstrip(_TIDY), title[pos + len(span) :].lstrip(_TIDY)
    restored = f"{left} {right}" if left and right else left or right
    return restored or None


def _mentions(sample: Sample, items: set[int]) -> bool:
    return sample.target in items or any(i in items for i in sample.history) or any(
        i in items for i in sample.candidates
    )


def sanitize(
    dataset: SplitDataset,
    flagged_items: Iterable[int],
    policy: str = "drop-target",
    detected_triggers: Mapping[int, str | None] | None = None,
    poison_manifest: Mapping[str, Any] | None = None,
) -> tuple[SplitDataset, dict[str, Any]]:
    """The sanitized dataset and a report (counts; ground-truth counts with a manifest)."""
    check_policy(policy)
    n_items = len(dataset.catalog)
    flagged = sorted({int(i) for i in flagged_items})
    bad = [i for i in flagged if not 0 <= i < n_items]
    if bad:
        raise ConfigError(f"flagged item ids {bad[:5]} are outside the catalog (0..{n_items - 1})")
    flagged_set = set(flagged)
    catalog = dataset.catalog
    report: dict[str, Any] = {"policy": policy, "n_flagged_items": len(flagged), "flagged_items": flagged}

    drop_targets: set[int] = set()
    if policy == "drop-target":
        drop_targets = flagged_set
    elif policy == "strip":
        spans = detected_triggers or {}
        restored: dict[int, str] = {}
        for item in flagged:
            span = spans.get(item)
            new = strip_span(catalog.titles[item], span) if span else None
            if new is None:
                drop_targets.add(item)
            else:
                restored[item] = new
        catalog = catalog.with_titles(restored)
        report["stripped_items"] = len(restored)
        report["strip_fallback_items"] = sorted(drop_targets)
        report["strip_fallback"] = (
            f"{len(drop_targets)} flagged item(s) had no detected span; their samples were "
            "dropped as with drop-target"
            if drop_targets
            else None
        )
        report["restored_titles"] = {str(i): t for i, t in sorted(restored.items())}

    if policy == "drop-any":
        removed = [k for k, s in enumerate(dataset.train) if _mentions(s, flagged_set)]
    else:
        removed = [k for k, s in enumerate(dataset.train) if s.target in drop_targets]
    removed_set = set(removed)
    train = tuple(s for k, s in enumerate(dataset.train) if k not in removed_set)

    report.update(
        train_before=len(dataset.train),
        train_after=len(train),
        removed_samples=len(removed),
        removed_train_indices=removed,
        valid_samples=len(dataset.valid),
        test_samples=len(dataset.test),
    )
    if poison_manifest is not None:
        report["ground_truth"] = _against_manifest(removed_set, catalog.titles, poison_manifest, policy)
    manifest = {
        **dataset.manifest,
        "sanitized": {k: report[k] for k in ("policy", "n_flagged_items", "removed_samples", "train_before")},
    }
    return dataset.replace(catalog=catalog, train=train, manifest=manifest), report


def _against_manifest(
    removed: set[int], titles: tuple[str, ...], manifest: Mapping[str, Any], policy: str
) -> dict[str, Any]:
    fake = {int(i) for i in manifest.get("fake_sample_indices", [])}
    out: dict[str, Any] = {
        "fake_samples": len(fake),
        "fake_removed": len(fake & removed),
        "fake_kept": len(fake - removed),
        "clean_removed": len(removed - fake),
    }
    if policy == "strip":
        clean_titles = {int(k): v for k, v in manifest.get("clean_titles", {}).items()}
        out["titles_restored_exactly"] = sum(titles[i] == t for i, t in clean_titles.items())
        out["triggered_titles"] = len(clean_titles)
    return out
