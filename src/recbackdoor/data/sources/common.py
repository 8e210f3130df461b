"""What a loader returns, and the bookkeeping every loader shares.

A loader reads one source directory and returns either :class:`RawData` (a catalog plus
time-ordered interactions, from which :mod:`recbackdoor.data.prepare` builds its own seeded
splits) or :class:`LlaraData` (a catalog plus LLaRA's own split rows, kept as they are). Both
carry the files read, so the manifest can list them with their sha256.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import DataError
from ...io_utils import sha256_file
from ..types import Catalog, Interactions
from ..validate import check_titles
from .textfile import read_table

Row = tuple[int, tuple[int, ...], int]  # (user, history oldest first, target)

# MovieLens-100K's u.item, read both by the ml100k loader and for LLaRA's MovieLens directory
# (here, below both modules, so neither imports the other for it)
ML100K_ENCODING = "ISO-8859-1"
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_U_ITEM_COLUMNS = [
    ("movie id", int),
    ("movie title", str),
    ("release date", str),
    ("video release date", str),
    ("IMDb URL", str),
    *((genre, int) for genre in ML100K_GENRES),
]

_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


@dataclass(frozen=True)
class SourceFile:
    """A file that was read: ``path`` on disk, ``label`` as the user gave it (for messages and
    the manifest, so the manifest does not depend on the working directory's absolute path)."""

    path: Path
    label: str

    def manifest_entry(self) -> dict[str, str]:
        return {"path": self.label, "sha256": sha256_file(self.path)}


class SourceDir:
    """A ``--source`` directory: resolves file names and records which files were read."""

    def __init__(self, source: str | Path, label: str | None = None) -> None:
        self.root = Path(source)
        self.label = label if label is not None else Path(source).as_posix()
        if not self.root.exists():
            raise DataError(f"{self.label}: source directory not found")
        if not self.root.is_dir():
            raise DataError(f"{self.label}: --source must be a directory holding the dataset files")
        self.read: list[SourceFile] = []

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def file(self, name: str, expected: str = "") -> SourceFile:
        """The file ``name``, recorded as read; a one-line error when it is missing."""
        path = self.root / name
        label = f"{self.label}/{name}"
        if not path.is_file():
            hint = f"; {expected}" if expected else ""
            raise DataError(f"{label}: file not found{hint}")
        entry = SourceFile(path, label)
        self.read.append(entry)
        return entry


@dataclass(frozen=True)
class RawData:
    """Catalog + interactions sorted per user by time; ``notes`` go into the manifest."""

    catalog: Catalog
    interactions: Interactions
    files: tuple[SourceFile, ...]
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LlaraData:
    """Catalog + LLaRA's own ``train``/``valid``/``test`` rows (dense item ids, padding removed)."""

    catalog: Catalog
    rows: Mapping[str, Sequence[Row]]
    files: tuple[SourceFile, ...]
    notes: Mapping[str, Any] = field(default_factory=dict)


def split_year(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; no trailing year -> ``(title, None)``."""
    match = _YEAR.search(title)
    if match is None:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))


def index_items(ids: Sequence[int], lines: Sequence[int], label: str) -> dict[int, int]:
    """Source item id -> dense id in file order; a repeated id is an error naming both lines."""
    index: dict[int, int] = {}
    first_line: dict[int, int] = {}
    for item, line in zip(ids, lines, strict=True):
        if item in index:
            raise DataError(
                f"{label} line {line}: item id {item} appears twice "
                f"(first on line {first_line[item]}); keep one of the two lines"
            )
        index[item] = len(index)
        first_line[item] = line
    return index


def build_interactions(
    table: Mapping[str, Sequence[Any]],
    item_index: Mapping[int, int],
    label: str,
    catalog_label: str,
) -> Interactions:
    """Interactions from parsed columns ``user``, ``item`` (source ids), ``timestamp``
    [``rating``]; an item id missing from the catalog is an error naming the line."""
    source_items = table["item"]
    keys = list(item_index)
    position = pd.Index(keys).get_indexer(np.asarray(source_items)) if keys else None
    missing = np.flatnonzero(position < 0) if position is not None else range(len(source_items))
    if len(missing):
        row = int(missing[0])
        raise DataError(
            f"{label} line {table['_line'][row]}: item id {source_items[row]} is not in "
            f"{catalog_label}; are the two files from the same dataset?"
        )
    items = np.fromiter(item_index.values(), dtype=np.int64, count=len(keys))[position]
    frame = pd.DataFrame(
        {"user": table["user"], "item": items, "timestamp": table["timestamp"]}, dtype="int64"
    )
    if "rating" in table:
        frame["rating"] = pd.array(table["rating"], dtype="float64")
    return Interactions.from_frame(frame)


def read_u_item(src: SourceDir) -> tuple[Catalog, dict[int, int], str]:
    """MovieLens-100K's ``u.item`` -> (catalog, movie id -> dense id, the file's label)."""
    item_file = src.file("u.item", "expected MovieLens-100K's u.item (movie id|title|...)")
    table = read_table(
        item_file.path, item_file.label, sep="|", columns=_U_ITEM_COLUMNS, encoding=ML100K_ENCODING
    )
    index = index_items(table["movie id"], table["_line"], item_file.label)
    titles = [t.strip() for t in table["movie title"]]
    check_titles(titles, table["_line"], item_file.label)
    genres = ["|".join(g for g in ML100K_GENRES if table[g][i]) for i in range(len(titles))]
    catalog = Catalog(
        titles=tuple(titles),
        domain="movies",
        years=tuple(split_year(t)[1] for t in titles),
        genres=tuple(genres),
        source_ids=tuple(str(i) for i in table["movie id"]),
    )
    return catalog, index, item_file.label
