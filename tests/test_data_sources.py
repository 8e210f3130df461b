"""Loaders of each source read the reference data correctly (ids, order, titles, padding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbackdoor.data.safe_pickle import safe_load
from recbackdoor.data.sources import lastfm, llara, ml1m, ml100k, steam
from recbackdoor.data.sources.common import LlaraData, RawData

FIXTURES = Path(__file__).parent / "fixtures"


def ml1m_dir(shared_data: Path, tmp_path: Path) -> Path:
    """Real movies.dat (linked, not copied into the repo) + the synthetic ratings fixture."""
    src = tmp_path / "ml-1m"
    src.mkdir()
    (src / "movies.dat").symlink_to(shared_data / "movielens" / "ml-1m" / "movies.dat")
    (src / "ratings.dat").symlink_to(FIXTURES / "ml1m" / "ratings_fixture.txt")
    return src


def test_ml1m_catalog_and_time_order(shared_data, tmp_path):
    data = ml1m.load(ml1m_dir(shared_data, tmp_path))
    assert isinstance(data, RawData)
    assert len(data.catalog) == 3883
    assert data.catalog.titles[0] == "Toy Story (1995)" and data.catalog.years[0] == 1995
    assert data.catalog.genres[0] == "Animation|Children's|Comedy"
    # expected order: each user's fixture lines sorted by timestamp, ties in file order
    dense = {sid: i for i, sid in enumerate(data.catalog.source_ids)}
    rows: dict[int, list[tuple[int, int]]] = {}
    for line in (FIXTURES / "ml1m" / "ratings_fixture.txt").read_text().splitlines():
        user, movie, _, ts = map(int, line.split("::"))
        rows.setdefault(user, []).append((ts, dense[str(movie)]))
    expected = {u: [i for _, i in sorted(r, key=lambda x: x[0])] for u, r in rows.items()}
    assert data.interactions.sequences() == expected


def test_ml100k_path_and_recbole_wheel_agree(shared_data):
    from_path = ml100k.load(shared_data / "movielens" / "ml-100k")
    from_wheel = ml100k.load(None)
    assert len(from_path.catalog) == len(from_wheel.catalog) == 1682
    assert from_path.catalog.source_ids == from_wheel.catalog.source_ids
    differ = [
        sid
        for sid, a, b in zip(
            from_path.catalog.source_ids,
            from_path.catalog.titles,
            from_wheel.catalog.titles,
            strict=True,
        )
        if a != b
    ]
    assert differ == ["267"]  # RecBole's copy spells this title "unkonwn"
    assert from_path.catalog.titles[0] == "Toy Story (1995)"
    assert (
        from_path.catalog.genres[0] == from_wheel.catalog.genres[0] == "Animation|Children's|Comedy"
    )
    assert from_path.interactions.frame.equals(from_wheel.interactions.frame)
    assert len(from_path.interactions) == 100_000
    assert from_wheel.files[0].label == "recbole/dataset_example/ml-100k/ml-100k.item"


def test_hetrec_lastfm_keeps_file_order(shared_data):
    src = shared_data / "lastfm" / "hetrec2011-lastfm-2k"
    data = lastfm.load(src)
    assert isinstance(data, RawData) and data.catalog.domain == "music"
    assert len(data.catalog) == 17632
    first = (src / "user_artists.dat").read_text().splitlines()[1:4]
    artist_ids = [line.split("\t")[1] for line in first]
    seq = data.interactions.sequences()[int(first[0].split("\t")[0])]
    assert [data.catalog.source_ids[i] for i in seq[:3]] == artist_ids


def _llara_rows(path: Path, pad: int) -> list[tuple[tuple[int, ...], int]]:
    """The rows as LLaRA stores them, decoded independently of the loader."""
    frame = safe_load(path)

    def item(v):
        return int(v[0]) if isinstance(v, tuple) else int(v)

    return [
        (tuple(item(v) for v in seq[:n] if item(v) != pad), item(nxt))
        for seq, n, nxt in zip(frame["seq"], frame["len_seq"], frame["next"], strict=True)
    ]


def test_lastfm_llara_ids_padding_and_users(shared_data):
    src = shared_data / "lastfm" / "llara"
    data = lastfm.load(src)
    assert isinstance(data, LlaraData) and len(data.catalog) == 4606
    assert data.catalog.source_ids[:3] == ("0", "1", "2")  # id2name ids are dense 0..n-1
    assert data.catalog.titles[2] == "Café Del Mar"
    expected = _llara_rows(src / "Val_data.df", pad=4606)
    assert [(h, t) for _, h, t in data.rows["valid"]] == expected
    assert any(len(h) < 10 for h, _ in expected)  # padding really was stripped somewhere
    train_users = {u for u, _, _ in data.rows["train"]}
    assert len(data.rows["train"]) == 50_800 and len(train_users) == 976
    eval_users = [u for split in ("valid", "test") for u, _, _ in data.rows[split]]
    assert len(set(eval_users)) == 244 and not train_users & set(eval_users)


def test_movielens_llara_ids_are_u_item_minus_one(shared_data):
    src = shared_data / "movielens" / "llara"
    data = llara.load(src)
    assert data.catalog.domain == "movies" and data.notes["train_file"] == "train_data.df100"
    raw = _llara_rows(src / "Test_data.df", pad=1682)
    for (_, history, target), (raw_history, raw_target) in zip(data.rows["test"], raw, strict=True):
        assert data.catalog.source_ids[target] == str(raw_target + 1)
        assert [data.catalog.source_ids[i] for i in history] == [str(i + 1) for i in raw_history]
    assert ml100k.load(src).rows["test"] == data.rows["test"]  # ml100k detects a LLaRA dir


def test_steam_llara_sampled_train_file(shared_data):
    data = steam.load(shared_data / "steam" / "llara")
    assert data.catalog.domain == "games" and len(data.catalog) == 3581
    assert data.notes["train_file"] == "train_data.df1000"
    assert len(data.rows["train"]) == 1000 and len(data.rows["valid"]) == 1194
    assert "Depths of Fear :: Knossos" in data.catalog.titles  # a title containing the separator


def test_generic_llara_needs_domain_for_id2name(shared_data):
    from recbackdoor.errors import ConfigError

    with pytest.raises(ConfigError, match="--domain"):
        llara.load(shared_data / "steam" / "llara")
    assert llara.load(shared_data / "steam" / "llara", domain="games").catalog.domain == "games"
