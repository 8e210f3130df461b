"""LastFM, from either (detected by the files present):

- hetrec2011-lastfm-2k: ``artists.dat`` (``id name url pictureURL``) and ``user_artists.dat``
  (``userID artistID weight``), tab-separated with a header line, UTF-8. The file has no
  timestamps (and ``user_taggedartists-timestamps.dat`` tags artists, not plays), so a user's
  sequence is **file order**: ``user_artists.dat`` lists each user's artists by ascending
  artist id. This is deterministic but not a time order; the listening ``weight`` is not used.
- a LLaRA processed directory (``id2name.txt`` + ``*_data.df``): LLaRA's own splits, see
  :mod:`.llara`.

Artists get dense ids in ``artists.dat`` order; ``Catalog.source_ids`` keeps the artist ids.
"""

from __future__ import annotations

from pathlib import Path

from ..types import Catalog
from ..validate import check_titles
from . import llara
from .common import LlaraData, RawData, SourceDir, build_interactions, index_items
from .textfile import read_table

DOMAIN = "music"


def load(source: str | Path) -> RawData | LlaraData:
    src = SourceDir(source)
    if src.has("user_artists.dat") or not llara.is_llara_dir(src):
        return _load_hetrec(src)
    return llara.load_dir(src, domain=DOMAIN)


def _load_hetrec(src: SourceDir) -> RawData:
    artists_file = src.file(
        "artists.dat", "expected hetrec2011-lastfm-2k's artists.dat or LLaRA's processed files"
    )
    plays_file = src.file("user_artists.dat", "expected hetrec2011-lastfm-2k's user_artists.dat")
    artists = read_table(
        artists_file.path,
        artists_file.label,
        sep="\t",
        columns=[("id", int), ("name", str), ("url", str), ("pictureURL", str)],
        header=["id", "name", "url", "pictureURL"],
        encoding="utf-8",
    )
    index = index_items(artists["id"], artists["_line"], artists_file.label)
    check_titles(artists["name"], artists["_line"], artists_file.label)
    catalog = Catalog(
        titles=tuple(name.strip() for name in artists["name"]),
        domain=DOMAIN,
        source_ids=tuple(str(i) for i in artists["id"]),
    )
    plays = read_table(
        plays_file.path,
        plays_file.label,
        sep="\t",
        columns=[("user", int), ("item", int), ("weight", int)],
        header=["userID", "artistID", "weight"],
        encoding="utf-8",
    )
    plays["timestamp"] = plays["_line"]  # file order stands in for time (see module docstring)
    interactions = build_interactions(plays, index, plays_file.label, artists_file.label)
    notes = {"format": "hetrec2011-lastfm-2k", "order": "file order of user_artists.dat"}
    return RawData(catalog, interactions, tuple(src.read), notes)
