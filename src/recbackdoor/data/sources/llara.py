"""LLaRA's processed datasets (shared by ``lastfm``, ``steam``, ``ml100k`` and ``llara``).

A LLaRA directory holds ``train_data.df``, ``Val_data.df``, ``Test_data.df`` (pickled pandas
DataFrames, read with :func:`~recbackdoor.data.safe_pickle.safe_load`) and a catalog:
``id2name.txt`` (``id::name``, UTF-8; LastFM, Steam) or ``u.item`` (MovieLens-100K). A sampled
train file named ``train_data.df<N>`` (e.g. ``train_data.df100``) is used when
``train_data.df`` is absent.

Each frame row has ``seq`` (10 item ids, padded at the end with pad id = number of items;
MovieLens entries are ``(item, rating)`` tuples), ``len_seq`` and ``next`` (the target; an
``(item, rating)`` tuple for MovieLens, whose rating is dropped). The history is
``seq[:len_seq]`` with pad ids removed (LLaRA's LastFM train rows that start a user have
``len_seq == 1`` and an all-pad ``seq``).

Item ids: LLaRA id ``k`` is ``id2name.txt``'s id ``k``, or ``u.item``'s movie id ``k + 1``
(LLaRA reads ``u.item`` as ``int(id) - 1``); they are remapped to dense ids in catalog-file order
and ``Catalog.source_ids`` keeps the catalog file's ids.

Users: LLaRA's frames carry no user id. Consecutive train rows where a row's history is the
previous row's history plus its target (last 10 kept) belong to one user; every valid and test
row is its own user (LLaRA splits by user). Ids count up from 0 over train, valid, test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import ConfigError, DataError
from ..safe_pickle import safe_load
from ..types import DOMAINS, Catalog
from ..validate import check_titles
from .common import LlaraData, Row, SourceDir, SourceFile, index_items, read_u_item
from .textfile import read_table

SPLIT_FILES = {"valid": "Val_data.df", "test": "Test_data.df"}
TRAIN_FILE = "train_data.df"
COLUMNS = ("seq", "len_seq", "next")


def is_llara_dir(src: SourceDir) -> bool:
    """Whether the directory holds any of LLaRA's split files."""
    return any(src.has(name) for name in SPLIT_FILES.values()) or _train_name(src) is not None


def _train_name(src: SourceDir) -> str | None:
    if src.has(TRAIN_FILE):
        return TRAIN_FILE
    sampled = sorted(
        (p.name for p in src.root.glob(f"{TRAIN_FILE}*") if p.name[len(TRAIN_FILE) :].isdigit()),
        key=lambda name: int(name[len(TRAIN_FILE) :]),
    )
    return sampled[-1] if sampled else None


def load(source: str | Path, domain: str | None = None) -> LlaraData:
    """A generic LLaRA directory; ``domain`` is required with an ``id2name.txt`` catalog."""
    return load_dir(SourceDir(source), domain)


def load_dir(src: SourceDir, domain: str | None) -> LlaraData:
    """Read a LLaRA directory; ``domain`` is required with an ``id2name.txt`` catalog."""
    if not is_llara_dir(src):
        raise DataError(
            f"{src.label}: not a LLaRA processed directory: expected {TRAIN_FILE}, "
            f"{', '.join(SPLIT_FILES.values())} and id2name.txt or u.item"
        )
    catalog, index, catalog_label, id_note = _read_catalog(src, domain)
    train_name = _train_name(src) or TRAIN_FILE
    files = {
        "train": src.file(
            train_name, "expected LLaRA's train_data.df (or a sample train_data.dfN)"
        ),
        **{
            split: src.file(name, f"expected LLaRA's {name}") for split, name in SPLIT_FILES.items()
        },
    }
    pad = len(catalog)
    parsed = {split: _read_rows(file, pad, index, catalog_label) for split, file in files.items()}
    rows = _assign_users(parsed)
    notes = {
        "format": "llara",
        "train_file": train_name,
        "item_ids": id_note,
        "pad_id": pad,
        "users": "reconstructed: consecutive train rows extending the previous row's history are "
        "one user; each valid/test row is its own user",
    }
    return LlaraData(catalog, rows, tuple(src.read), notes)


def _read_catalog(src: SourceDir, domain: str | None) -> tuple[Catalog, dict[int, int], str, str]:
    """(catalog, LLaRA item id -> dense id, catalog label, how ids map)."""
    if src.has("id2name.txt") or not src.has("u.item"):
        if domain is None:
            raise ConfigError(
                f"{src.label}: cannot tell the domain of an id2name.txt catalog; "
                f"pass --domain ({'|'.join(DOMAINS)})"
            )
        file = src.file("id2name.txt", "expected LLaRA's id2name.txt (id::name) or u.item")
        table = read_table(
            file.path,
            file.label,
            sep="::",
            columns=[("id", int), ("name", str)],
            encoding="utf-8",
            rest_in_last=True,
        )
        index = index_items(table["id"], table["_line"], file.label)
        check_titles(table["name"], table["_line"], file.label)
        catalog = Catalog(
            titles=tuple(name.strip() for name in table["name"]),
            domain=domain,
            source_ids=tuple(str(i) for i in table["id"]),
        )
        return catalog, index, file.label, "LLaRA id k = id2name.txt id k"
    if domain not in (None, "movies"):
        raise ConfigError(f"{src.label}: a u.item catalog is MovieLens (movies), not {domain}")
    catalog, by_movie_id, label = read_u_item(src)
    index = {movie_id - 1: dense for movie_id, dense in by_movie_id.items()}
    return catalog, index, label, "LLaRA id k = u.item movie id k+1"


def _item(value: Any) -> Any:
    """LLaRA's MovieLens entries are (item, rating) pairs; others are bare ids."""
    return value[0] if isinstance(value, tuple | list) and value else value


def _read_rows(
    file: SourceFile, pad: int, index: dict[int, int], catalog_label: str
) -> list[tuple[tuple[int, ...], int]]:
    """(history, target) per row, dense ids, pad removed, in file order."""
    frame = safe_load(file.path, file.label)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{file.label}: expected a pandas DataFrame, found {type(frame).__name__}; use LLaRA's original data files")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{file.label}: missing column(s) {', '.join(missing)}; "
            f"LLaRA frames have {', '.join(COLUMNS)} (found {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise DataError(f"{file.label}: the DataFrame has no rows; use LLaRA's complete data files")

    def dense(value: Any, row: int, allow_pad: bool) -> int | None:
        try:
            item = int(_item(value))
        except (TypeError, ValueError):
            raise DataError(f"{file.label} row {row}: item {value!r} is not an item id; use LLaRA's original data files") from None
        if item == pad and allow_pad:
            return None
        if item not in index:
            raise DataError(
                f"{file.label} row {row}: item id {item} is not in {catalog_label} "
                f"(pad id is {pad}); are the files from the same dataset?"
            )
        return index[item]

    out = []
    for row, (seq, len_seq, target) in enumerate(
        zip(frame["seq"], frame["len_seq"], frame["next"], strict=True)
    ):
        if not isinstance(seq, Sequence) or isinstance(seq, str):
            raise DataError(f"{file.label} row {row}: seq is {type(seq).__name__}, not a list; use LLaRA's original data files")
        history = tuple(
            d for d in (dense(v, row, allow_pad=True) for v in seq[: int(len_seq)]) if d is not None
        )
        out.append((history, dense(target, row, allow_pad=False)))
    return out


def _assign_users(
    parsed: dict[str, list[tuple[tuple[int, ...], int]]], width: int = 10
) -> dict[str, tuple[Row, ...]]:
    """Give rows user ids (see the module docstring)."""
    next_user = 0
    rows: dict[str, tuple[Row, ...]] = {}
    for split in ("train", "valid", "test"):
        out: list[Row] = []
        prev: tuple[tuple[int, ...], int] | None = None
        for history, target in parsed[split]:
            extends = (
                split == "train"
                and prev is not None
                and len(history) > 0
                and history == (*prev[0], prev[1])[-width:]
            )
            if not extends:
                next_user += 1
            out.append((next_user - 1, history, target))
            prev = (history, target)
        rows[split] = tuple(out)
    return rows
