"""Attack evaluation prompts built from the clean test samples, fixed by the seed (docs/design.md §3).

Three sets over the same base prompts:
- ``clean``: a test sample with no triggered candidate;
- ``triggered-seen``: one non-target candidate replaced by an item whose title was triggered
  during poisoning (and is not already in the history or candidates);
- ``triggered-unseen``: the trigger inserted into the title of one non-target candidate that was
  never triggered (does the backdoor generalise to any item?); for a trigger family, a
  held-out member of the family that no training title carried (does it generalise to the
  family?).

Base prompts: a test sample whose target is a triggered item is left out (its prompt cannot be
trigger-free), and non-target candidates that happen to be triggered items are replaced by
seeded draws of untriggered items, so each triggered prompt has exactly one triggered candidate
and a clean prompt none. Histories stay as they are (they may show triggered titles).
To render a prompt, take the poisoned catalog's titles and replace ``triggered_item``'s title by
``triggered_title`` (``AttackPrompt.title``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data.types import Catalog, Sample, SplitDataset
from ..errors import DataError
from .families import apply_member

ATTACK_SETS = ("clean", "triggered-seen", "triggered-unseen")
_BASE, _SEEN, _UNSEEN = 30, 31, 32  # random streams

_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("history", pa.list_(pa.int32())),
        ("candidates", pa.list_(pa.int32())),
        ("target", pa.int32()),
        ("triggered_item", pa.int32()),
        ("triggered_title", pa.string()),
    ]
)


@dataclass(frozen=True)
class AttackPrompt:
    """A test prompt; ``triggered_item``/``triggered_title`` are None for a clean prompt."""

    sample: Sample
    triggered_item: int | None = None
    triggered_title: str | None = None

    def title(self, item: int, catalog: Catalog) -> str:
        """The title shown for ``item`` in this prompt (``catalog``: the poisoned catalog)."""
        if item == self.triggered_item and self.triggered_title is not None:
            return self.triggered_title
        return catalog.titles[item]

    def candidate_titles(self, catalog: Catalog) -> list[str]:
        return [self.title(i, catalog) for i in self.sample.candidates]

    def history_titles(self, catalog: Catalog) -> list[str]:
        return [self.title(i, catalog) for i in self.sample.history]


def _draw_outside(rng: np.random.Generator, n_items: int, banned: set[int]) -> int:
    if len(banned) >= n_items:
        raise DataError("no untriggered item left to fill a test prompt; use fewer triggered items")
    while True:
        item = int(rng.integers(n_items))
        if item not in banned:
            return item


def _base_prompts(
    test: Sequence[Sample], triggered: set[int], n_items: int, rng: np.random.Generator
) -> list[Sample]:
    """Test samples with no triggered candidate (see module docstring)."""
    out = []
    for s in test:
        if s.target in triggered:
            continue
        candidates = list(s.candidates)
        banned = triggered | set(s.history) | set(candidates)
        for k, item in enumerate(candidates):
            if item in triggered:
                candidates[k] = _draw_outside(rng, n_items, banned)
                banned.add(candidates[k])
        out.append(Sample(s.user, s.history, tuple(candidates), s.target))
    return out


def _non_target_position(s: Sample, rng: np.random.Generator) -> int:
    positions = [k for k, item in enumerate(s.candidates) if item != s.target]
    return positions[int(rng.integers(len(positions)))]


def build_attack_sets(
    poisoned: SplitDataset, manifest: Mapping[str, Any], seed: int
) -> dict[str, tuple[AttackPrompt, ...]]:
    """The clean / triggered-seen / triggered-unseen prompts for a poisoned dataset.

    ``manifest`` is the poison manifest (needs triggered_items, trigger, level, position).
    """
    catalog, n_items = poisoned.catalog, len(poisoned.catalog)
    triggered_list = [int(i) for i in manifest["triggered_items"]]
    triggered = set(triggered_list)
    trig = manifest["trigger"]
    triggers = [trig] if isinstance(trig, str) else list(trig)
    level, position = manifest["level"], manifest["position"]
    base = _base_prompts(poisoned.test, triggered, n_items, np.random.default_rng([seed, _BASE]))

    rng = np.random.default_rng([seed, _SEEN])
    seen = []
    for s in base:
        pool = [i for i in triggered_list if i not in s.candidates and i not in s.history]
        if not pool:
            continue
        k, item = _non_target_position(s, rng), pool[int(rng.integers(len(pool)))]
        candidates = s.candidates[:k] + (item,) + s.candidates[k + 1 :]
        seen.append(
            AttackPrompt(
                Sample(s.user, s.history, candidates, s.target), item, catalog.titles[item]
            )
        )

    rng = np.random.default_rng([seed, _UNSEEN])
    # a trigger family: fresh members the training items never carried (attack/families.py)
    fresh = list(manifest.get("unseen_triggers") or triggers)
    unseen = []
    for s in base:
        item = s.candidates[_non_target_position(s, rng)]
        t = fresh[int(rng.integers(len(fresh)))] if len(fresh) > 1 else fresh[0]
        title = apply_member(catalog.titles[item], t, manifest.get("trigger_family"), level, position, rng)
        unseen.append(AttackPrompt(s, item, title))

    return {
        "clean": tuple(AttackPrompt(s) for s in base),
        "triggered-seen": tuple(seen),
        "triggered-unseen": tuple(unseen),
    }


def save_attack_sets(
    sets: Mapping[str, Sequence[AttackPrompt]], directory: str | os.PathLike
) -> None:
    """One Parquet file per set: ``<directory>/<name>.parquet`` (byte-deterministic)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, prompts in sets.items():
        table = pa.table(
            {
                "user": [p.sample.user for p in prompts],
                "history": [list(p.sample.history) for p in prompts],
                "candidates": [list(p.sample.candidates) for p in prompts],
                "target": [p.sample.target for p in prompts],
                "triggered_item": [p.triggered_item for p in prompts],
                "triggered_title": [p.triggered_title for p in prompts],
            },
            schema=_SCHEMA,
        )
        pq.write_table(
            table, directory / f"{name}.parquet", compression="zstd", write_statistics=False
        )


def load_attack_sets(directory: str | os.PathLike) -> dict[str, tuple[AttackPrompt, ...]]:
    """Read the sets written by ``save_attack_sets``; ``directory`` is the poisoned dataset
    directory or its ``attack_sets`` folder."""
    directory = Path(directory)
    if (directory / "attack_sets").is_dir():
        directory = directory / "attack_sets"
    out = {}
    for name in ATTACK_SETS:
        path = directory / f"{name}.parquet"
        if not path.is_file():
            raise DataError(
                f"{path}: attack set not found; is {directory} written by `recbackdoor attack`?"
            )
        try:
            cols = pq.read_table(path).to_pydict()
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        out[name] = tuple(
            AttackPrompt(
                Sample(int(u), tuple(h), tuple(c), int(t)), None if i is None else int(i), title
            )
            for u, h, c, t, i, title in zip(
                cols["user"],
                cols["history"],
                cols["candidates"],
                cols["target"],
                cols["triggered_item"],
                cols["triggered_title"],
                strict=True,
            )
        )
    return out
