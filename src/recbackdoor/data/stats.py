"""Summary numbers of a prepared dataset, as a dict and as a table (rich or plain text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .types import SPLITS, Sample, SampleBlock, SplitDataset, users_and_history_lengths


def dataset_stats(ds: SplitDataset) -> dict[str, Any]:
    """Users, items, samples per split and history-length histograms (JSON-friendly)."""
    columns = {split: users_and_history_lengths(ds.split(split)) for split in SPLITS}
    users = {split: _distinct(columns[split][0]) for split in SPLITS}
    all_users = _distinct(np.concatenate(list(users.values())))
    histograms = {}
    for split in SPLITS:
        counts = np.bincount(columns[split][1])
        histograms[split] = {str(k): int(counts[k]) for k in np.flatnonzero(counts).tolist()}
    used = _distinct(np.concatenate([_items(ds.split(split)) for split in SPLITS]))
    widths = set()
    for split in SPLITS:
        samples = ds.split(split)
        if isinstance(samples, SampleBlock):
            widths |= {samples.candidates.shape[1]} if len(samples) else set()
        else:
            widths |= {len(s.candidates) for s in samples}
    return {
        "dataset": ds.name,
        "domain": ds.catalog.domain,
        "items": len(ds.catalog),
        "items_in_samples": len(used),
        "users": len(all_users),
        "users_per_split": {split: len(users[split]) for split in SPLITS},
        "samples": {split: len(ds.split(split)) for split in SPLITS},
        "candidates_per_sample": sorted(widths),
        "history_length": histograms,
        "seed": ds.manifest.get("seed"),
    }


def _distinct(ids: np.ndarray) -> np.ndarray:
    """The distinct ids (counted through a bincount when they are small non-negative ints)."""
    if len(ids) and ids.min() >= 0 and ids.max() < 4 * len(ids) + 1_000_000:
        return np.flatnonzero(np.bincount(ids))
    return np.unique(ids)


def _items(samples: Sequence[Sample]) -> np.ndarray:
    """Every history item and target of the samples (with repeats)."""
    if isinstance(samples, SampleBlock):
        return np.concatenate((samples.history_values(), samples.target))
    return np.fromiter(
        (i for s in samples for i in (*s.history, s.target)), dtype=np.int64
    )


def render_stats(stats: dict[str, Any]) -> str:
    """Plain-text rendering (for logs and non-terminal output)."""
    lines = [
        f"dataset {stats['dataset']} ({stats['domain']}), seed {stats['seed']}",
        f"items {stats['items']} ({stats['items_in_samples']} appear in samples), "
        f"users {stats['users']}",
        f"candidates per sample: {', '.join(map(str, stats['candidates_per_sample'])) or '-'}",
        f"{'split':<6} {'users':>8} {'samples':>9}  history length: count",
    ]
    for split in SPLITS:
        hist = " ".join(f"{k}:{v}" for k, v in stats["history_length"][split].items())
        lines.append(
            f"{split:<6} {stats['users_per_split'][split]:>8} {stats['samples'][split]:>9}  {hist}"
        )
    return "\n".join(lines)


def stats_table(stats: dict[str, Any]) -> Any:
    """A ``rich`` table of the same numbers (imported lazily: only the CLI needs it)."""
    from rich.table import Table

    title = (
        f"{stats['dataset']} ({stats['domain']}): {stats['items']} items "
        f"({stats['items_in_samples']} in samples), {stats['users']} users, seed {stats['seed']}"
    )
    table = Table(title=title)
    table.add_column("split")
    table.add_column("users", justify="right")
    table.add_column("samples", justify="right")
    table.add_column("history length: count")
    for split in SPLITS:
        hist = " ".join(f"{k}:{v}" for k, v in stats["history_length"][split].items())
        table.add_row(
            split, str(stats["users_per_split"][split]), str(stats["samples"][split]), hist
        )
    return table
