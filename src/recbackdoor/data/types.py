"""Canonical data objects shared by every layer (docs/design.md §2).

Item ids are dense ints ``0..n_items-1`` and index ``Catalog.titles``. A ``Sample`` is one
LLaRA-style next-item example with its candidate set fixed once (drawn with the seed and stored),
so every model is measured on the same prompts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

DOMAINS = ("movies", "music", "games")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Catalog:
    """Item id -> title (+ optional year and genres); ``domain`` is movies | music | games."""

    titles: tuple[str, ...]
    domain: str = "movies"
    years: tuple[int | None, ...] | None = None
    genres: tuple[str, ...] | None = None  # "|"-joined genre names per item, "" if unknown
    source_ids: tuple[str, ...] | None = None  # the item's id in the source files

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; expected one of {DOMAINS}")
        for name in ("years", "genres", "source_ids"):
            col = getattr(self, name)
            if col is not None and len(col) != len(self.titles):
                raise ValueError(f"Catalog.{name} has {len(col)} entries for {len(self.titles)} titles")

    def __len__(self) -> int:
        return len(self.titles)

    def title(self, item: int) -> str:
        return self.titles[item]

    def with_titles(self, new_titles: Mapping[int, str]) -> Catalog:
        """A copy whose titles for the given item ids are replaced (e.g. triggered titles)."""
        titles = list(self.titles)
        for item, title in new_titles.items():
            titles[item] = title
        return replace(self, titles=tuple(titles))

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({"item": range(len(self.titles)), "title": list(self.titles)})
        if self.years is not None:
            frame["year"] = pd.array(list(self.years), dtype="Int64")
        if self.genres is not None:
            frame["genres"] = list(self.genres)
        if self.source_ids is not None:
            frame["source_id"] = list(self.source_ids)
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, domain: str) -> Catalog:
        if list(frame["item"]) != list(range(len(frame))):
            raise ValueError("catalog item ids must be dense 0..n-1 in order")

        def col(name: str, conv: Any) -> tuple | None:
            if name not in frame.columns:
                return None
            return tuple(None if pd.isna(v) else conv(v) for v in frame[name])

        return cls(
            titles=tuple(str(t) for t in frame["title"]),
            domain=domain,
            years=col("year", int),
            genres=col("genres", str),
            source_ids=col("source_id", str),
        )


@dataclass(frozen=True)
class Interactions:
    """(user, item, timestamp[, rating]) rows, sorted per user by time (stable on ties).

    ``frame`` has int columns ``user``, ``item``, ``timestamp`` and optionally ``rating``.
    """

    frame: pd.DataFrame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Interactions:
        missing = {"user", "item", "timestamp"} - set(frame.columns)
        if missing:
            raise ValueError(f"interactions lack columns {sorted(missing)}")
        ordered = frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
        return cls(ordered)

    def sequences(self) -> dict[int, list[int]]:
        """user -> item ids in time order."""
        users = self.frame["user"].to_numpy()
        order = np.argsort(users, kind="stable")  # a no-op permutation when built by from_frame
        users = users[order]
        items = self.frame["item"].to_numpy().astype(np.int64)[order].tolist()
        cuts = (np.flatnonzero(users[1:] != users[:-1]) + 1).tolist()
        bounds = zip([0, *cuts], [*cuts, len(items)], strict=True)
        return {int(users[start]): items[start:end] for start, end in bounds if end > start}

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class Sample:
    """One next-item example: ``history`` oldest first (<= 10 ids), 20 shuffled ``candidates``
    containing ``target``. ``user`` is the (possibly fake) user id."""

    user: int
    history: tuple[int, ...]
    candidates: tuple[int, ...]
    target: int

    def __post_init__(self) -> None:
        if self.target not in self.candidates:
            raise ValueError(f"sample of user {self.user}: target {self.target} not among candidates")


class SampleBlock(Sequence[Sample]):
    """Samples kept as numpy columns; the :class:`Sample` objects are built on first use.

    ``data prepare`` makes ~800k samples for ML-1M: building them as Python objects took longer
    than everything else, while writing the files, the manifest counts and the statistics need
    only the columns. Anything else (indexing, iterating, ``==``, ``+``) sees the same samples
    as the tuple :meth:`as_tuple` (built once, then kept); a slice is a tuple, pickling gives a
    tuple. Columns: ``user`` (n), ``history`` (n x width, sample k's history is
    ``history[k, :history_lengths[k]]``, the rest is padding), ``candidates`` (n x k), ``target``.
    """

    __slots__ = ("user", "history", "history_lengths", "candidates", "target", "_tuple")

    def __init__(
        self,
        user: np.ndarray,
        history: np.ndarray,
        history_lengths: np.ndarray,
        candidates: np.ndarray,
        target: np.ndarray,
    ) -> None:
        n = len(target)
        if not len(user) == len(history) == len(history_lengths) == len(candidates) == n:
            raise ValueError("SampleBlock columns differ in length")
        self.user, self.target = user, target
        self.history, self.history_lengths = history, history_lengths
        self.candidates = candidates
        self._tuple: tuple[Sample, ...] | None = None

    def history_values(self) -> np.ndarray:
        """Every history, concatenated in order."""
        return self.history[np.arange(self.history.shape[1]) < self.history_lengths[:, None]]

    def as_tuple(self) -> tuple[Sample, ...]:
        if self._tuple is None:
            self._tuple = tuple(
                Sample(u, tuple(h[:k]), tuple(c), t)
                for u, h, k, c, t in zip(
                    self.user.tolist(),
                    self.history.tolist(),
                    self.history_lengths.tolist(),
                    self.candidates.tolist(),
                    self.target.tolist(),
                    strict=True,
                )
            )
        return self._tuple

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index):  # type: ignore[override]
        return self.as_tuple()[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.as_tuple())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleBlock | tuple):
            return self.as_tuple() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __add__(self, other: object) -> tuple[Sample, ...]:
        if isinstance(other, SampleBlock | tuple):
            return self.as_tuple() + tuple(other)
        return NotImplemented

    def __radd__(self, other: object) -> tuple[Sample, ...]:
        if isinstance(other, tuple):
            return other + self.as_tuple()
        return NotImplemented

    def __reduce__(self):
        return tuple, (self.as_tuple(),)

    def __repr__(self) -> str:
        return f"SampleBlock({len(self)} samples)"


def users_and_history_lengths(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """(user per sample, history length per sample), from the columns when there are some."""
    if isinstance(samples, SampleBlock):
        return samples.user, samples.history_lengths
    return (
        np.fromiter((s.user for s in samples), dtype=np.int64, count=len(samples)),
        np.fromiter((len(s.history) for s in samples), dtype=np.int64, count=len(samples)),
    )


@dataclass(frozen=True)
class SplitDataset:
    """A catalog plus train/valid/test samples and the manifest that says how they were made.

    A split is a tuple of samples, or a :class:`SampleBlock` (what ``data prepare`` builds),
    which reads as the same tuple."""

    catalog: Catalog
    train: tuple[Sample, ...]
    valid: tuple[Sample, ...]
    test: tuple[Sample, ...]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest.get("dataset", "unknown"))

    def split(self, name: str) -> tuple[Sample, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def counts(self) -> dict[str, int]:
        users = np.unique(np.concatenate([users_and_history_lengths(self.split(s))[0] for s in SPLITS]))
        return {
            "items": len(self.catalog),
            "users": len(users),
            **{f"{split}_samples": len(self.split(split)) for split in SPLITS},
        }

    def replace(self, **changes: Any) -> SplitDataset:
        return replace(self, **changes)


def samples_to_frame(samples: Iterable[Sample]) -> pd.DataFrame:
    rows = [(s.user, list(s.history), list(s.candidates), s.target) for s in samples]
    return pd.DataFrame(rows, columns=["user", "history", "candidates", "target"])


def samples_from_frame(frame: pd.DataFrame) -> tuple[Sample, ...]:
    return tuple(
        Sample(int(u), tuple(int(i) for i in h), tuple(int(i) for i in c), int(t))
        for u, h, c, t in zip(frame["user"], frame["history"], frame["candidates"], frame["target"], strict=True)
    )
