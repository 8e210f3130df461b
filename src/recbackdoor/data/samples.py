"""LLaRA-style sample construction: seeded user split, training prefixes, fixed candidates.

Defaults follow LLaRA: users split 8:1:1 by a seeded shuffle; every prefix of a training user
with at least ``min_history`` (3) items becomes a sample (history = last <= 10 items, target =
next item); a held-out user gives one sample for its final item. Candidates are the target plus
19 items drawn uniformly from items outside the history and the target, drawn once and stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .types import Sample

MAX_HISTORY = 10
MIN_HISTORY = 3
N_CANDIDATES = 20


@dataclass(frozen=True)
class SampleOptions:
    """How samples are built; recorded in the manifest."""

    max_history: int = MAX_HISTORY
    min_history: int = MIN_HISTORY
    n_candidates: int = N_CANDIDATES
    split_ratio: tuple[int, int, int] = (8, 1, 1)


def draw_candidates(
    rng: np.random.Generator,
    n_items: int,
    target: int,
    exclude: Iterable[int] = (),
    n_candidates: int = N_CANDIDATES,
) -> tuple[int, ...]:
    """``target`` plus ``n_candidates - 1`` distinct items not in ``exclude``, shuffled.

    Rejection sampling: cheap because histories are tiny next to the catalog.
    """
    banned = set(exclude)
    banned.add(target)
    need = n_candidates - 1
    if n_items - len(banned) < need:
        raise DataError(
            f"cannot draw {need} negative candidates from {n_items} items with {len(banned)} excluded; "
            "use a larger catalog or fewer candidates"
        )
    chosen: list[int] = []
    seen = set(banned)
    while len(chosen) < need:
        for item in rng.integers(0, n_items, size=2 * need).tolist():
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == need:
                    break
    chosen.insert(int(rng.integers(0, n_candidates)), target)
    return tuple(chosen)


def split_users(users: Sequence[int], seed: int, ratio: tuple[int, int, int] = (8, 1, 1)) -> dict[str, list[int]]:
    """Seeded shuffle of ``users`` cut into train/valid/test by ``ratio``."""
    order = sorted(users)
    np.random.default_rng(seed).shuffle(order)
    total = sum(ratio)
    n_valid = round(len(order) * ratio[1] / total)
    n_test = round(len(order) * ratio[2] / total)
    n_train = len(order) - n_valid - n_test
    return {
        "train": sorted(order[:n_train]),
        "valid": sorted(order[n_train : n_train + n_valid]),
        "test": sorted(order[n_train + n_valid :]),
    }


def build_samples(
    sequences: Mapping[int, Sequence[int]],
    n_items: int,
    seed: int,
    options: SampleOptions = SampleOptions(),
) -> dict[str, tuple[Sample, ...]]:
    """Build train/valid/test samples from per-user item sequences (time order)."""
    rng = np.random.default_rng([seed, 1])
    groups = split_users(list(sequences), seed, options.split_ratio)
    out: dict[str, tuple[Sample, ...]] = {}
    for split, users in groups.items():
        samples: list[Sample] = []
        for user in users:
            seq = list(sequences[user])
            positions = range(options.min_history, len(seq)) if split == "train" else [len(seq) - 1]
            for i in positions:
                history = tuple(seq[max(0, i - options.max_history) : i])
                if len(history) < options.min_history:
                    continue
                candidates = draw_candidates(rng, n_items, seq[i], history, options.n_candidates)
                samples.append(Sample(user, history, candidates, seq[i]))
        out[split] = tuple(samples)
    return out


def with_fixed_candidates(
    rows: Iterable[tuple[int, Sequence[int], int]],
    n_items: int,
    seed: int,
    n_candidates: int = N_CANDIDATES,
    stream: int = 0,
) -> tuple[Sample, ...]:
    """Samples from given (user, history, target) rows, adding seeded candidates only.

    Used for LLaRA's own splits: their histories and targets are kept as they are. ``stream``
    separates the random streams of the splits (call with 0, 1, 2 for train, valid, test).
    """
    rng = np.random.default_rng([seed, 2, stream])
    return tuple(
        Sample(user, tuple(history), draw_candidates(rng, n_items, target, history, n_candidates), target)
        for user, history, target in rows
    )
