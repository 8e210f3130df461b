"""MovieLens-1M: ``movies.dat`` + ``ratings.dat`` (``::``-separated, ISO-8859-1).

Items get dense ids in ``movies.dat`` order (``Catalog.source_ids`` keeps the MovieIDs); each
user's ratings are ordered by timestamp, ties kept in file order.
"""

from __future__ import annotations

from pathlib import Path

from ..types import Catalog
from ..validate import check_titles
from .common import RawData, SourceDir, build_interactions, index_items, split_year
from .textfile import read_table, to_int

ENCODING = "ISO-8859-1"


def load(source: str | Path) -> RawData:
    src = SourceDir(source)
    movies_file = src.file(
        "movies.dat", "expected MovieLens-1M's movies.dat (MovieID::Title::Genres)"
    )
    ratings_file = src.file(
        "ratings.dat", "expected MovieLens-1M's ratings.dat (UserID::MovieID::Rating::Timestamp)"
    )
    movies = read_table(
        movies_file.path,
        movies_file.label,
        sep="::",
        columns=[("MovieID", int), ("Title", str), ("Genres", str)],
        encoding=ENCODING,
    )
    index = index_items(movies["MovieID"], movies["_line"], movies_file.label)
    check_titles(movies["Title"], movies["_line"], movies_file.label)
    catalog = Catalog(
        titles=tuple(t.strip() for t in movies["Title"]),
        domain="movies",
        years=tuple(split_year(t)[1] for t in movies["Title"]),
        genres=tuple(g.strip() for g in movies["Genres"]),
        source_ids=tuple(str(i) for i in movies["MovieID"]),
    )
    ratings = read_table(
        ratings_file.path,
        ratings_file.label,
        sep="::",
        columns=[("user", int), ("item", int), ("rating", to_int), ("timestamp", int)],
        encoding=ENCODING,
    )
    interactions = build_interactions(ratings, index, ratings_file.label, movies_file.label)
    return RawData(
        catalog,
        interactions,
        tuple(src.read),
        {"format": "movielens-1m", "order": "timestamp, ties in file order"},
    )
