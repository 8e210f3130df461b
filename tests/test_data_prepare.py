"""prepare_dataset: samples, candidates, options, determinism; dataset_stats."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbackdoor.data.io import load_dataset
from recbackdoor.data.prepare import llara_title, prepare_dataset, prepare_to_dir
from recbackdoor.data.safe_pickle import safe_load
from recbackdoor.data.stats import dataset_stats, render_stats
from recbackdoor.data.types import SPLITS
from recbackdoor.errors import ConfigError

from .test_data_sources import ml1m_dir


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("which", ["ml1m-raw", "movielens-llara"])
def test_same_source_and_seed_give_identical_bytes(shared_data, tmp_path, which):
    if which == "ml1m-raw":
        dataset, source = "ml1m", ml1m_dir(shared_data, tmp_path)
    else:
        dataset, source = "llara", shared_data / "movielens" / "llara"
    prepare_to_dir(dataset, source, tmp_path / "a", seed=3)
    prepare_to_dir(dataset, source, tmp_path / "b", seed=3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == {
        "catalog.parquet",
        "train.parquet",
        "valid.parquet",
        "test.parquet",
        "manifest.json",
    }
    assert a == b


def test_manifest_records_sources_options_and_seed(shared_data, tmp_path):
    src = ml1m_dir(shared_data, tmp_path)
    ds = prepare_dataset("ml1m", src, seed=5)
    m = ds.manifest
    assert m["dataset"] == "ml1m" and m["domain"] == "movies" and m["seed"] == 5
    assert [s["path"] for s in m["sources"]] == [
        f"{src.as_posix()}/movies.dat",
        f"{src.as_posix()}/ratings.dat",
    ]
    assert all(len(s["sha256"]) == 64 for s in m["sources"])
    assert m["options"]["title_style"] == "keep" and m["options"]["n_candidates"] == 20


def test_other_seed_other_candidates_same_llara_split(shared_data):
    src = shared_data / "movielens" / "llara"
    a = prepare_dataset("llara", src, seed=0)
    b = prepare_dataset("llara", src, seed=1)
    for split in SPLITS:
        sa, sb = a.split(split), b.split(split)
        assert [(s.user, s.history, s.target) for s in sa] == [
            (s.user, s.history, s.target) for s in sb
        ]
        assert sum(x.candidates != y.candidates for x, y in zip(sa, sb, strict=True)) > 0.9 * len(
            sa
        )


def test_raw_source_seed_changes_the_user_split(shared_data, tmp_path):
    src = ml1m_dir(shared_data, tmp_path)
    a, b = prepare_dataset("ml1m", src, seed=0), prepare_dataset("ml1m", src, seed=1)
    assert {s.user for s in a.test} != {s.user for s in b.test}


def test_candidates_are_valid_and_splits_follow_llara(shared_data):
    ds = prepare_dataset("steam", shared_data / "steam" / "llara", seed=0)
    raw = safe_load(shared_data / "steam" / "llara" / "Val_data.df")
    assert len(ds.valid) == int((raw["len_seq"] >= 3).sum())  # LLaRA drops len_seq < 3
    for s in ds.valid + ds.test + ds.train:
        assert len(s.candidates) == 20 == len(set(s.candidates))
        assert s.target in s.candidates
        assert not (set(s.candidates) - {s.target}) & set(s.history)
        assert all(0 <= i < len(ds.catalog) for i in s.candidates)


def test_history_length_options(shared_data):
    ds = prepare_dataset(
        "steam", shared_data / "steam" / "llara", min_history=4, max_history=6, n_candidates=8
    )
    lengths = {len(s.history) for split in SPLITS for s in ds.split(split)}
    assert min(lengths) == 4 and max(lengths) == 6
    assert {len(s.candidates) for s in ds.test} == {8}


def test_llara_title_style():
    assert llara_title("Usual Suspects, The (1995)") == "The Usual Suspects"
    assert llara_title("Toy Story (1995)") == "Toy Story"
    assert (
        llara_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
        == "The City of Lost Children (Cité des enfants perdus, La)"
    )
    assert llara_title("unknown") == "unknown"


def test_title_style_applies_to_movies_only(shared_data):
    ds = prepare_dataset("ml100k", shared_data / "movielens" / "llara", title_style="llara")
    assert ds.catalog.titles[0] == "Toy Story"
    assert "The Usual Suspects" in ds.catalog.titles
    music = prepare_dataset("steam", shared_data / "steam" / "llara", title_style="llara")
    assert music.catalog.titles[:2] == ("Ironbound", "Real Pool 3D - Poolians")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset": "netflix"}, "unknown dataset"),
        ({"title_style": "short"}, "unknown title style"),
        ({"min_history": 5, "max_history": 3}, "min_history"),
        ({"n_candidates": 1}, "n_candidates"),
        ({"seed": -1}, "seed"),
        ({"domain": "books"}, "unknown domain"),
        ({"dataset": "steam", "domain": "music"}, "steam is games"),
        ({"dataset": "steam", "source": None}, "needs --source"),
    ],
)
def test_bad_options_are_config_errors(kwargs, match):
    args = {"dataset": "llara", "source": "unused", **kwargs}
    with pytest.raises(ConfigError, match=match):
        prepare_dataset(**args)


def test_stats_of_saved_dataset(shared_data, tmp_path):
    ds = prepare_to_dir("llara", shared_data / "movielens" / "llara", tmp_path / "d")
    stats = dataset_stats(load_dataset(tmp_path / "d"))
    assert stats["items"] == 1682 and stats["domain"] == "movies"
    assert stats["samples"] == {"train": len(ds.train), "valid": 94, "test": 95}
    for split in SPLITS:
        assert sum(stats["history_length"][split].values()) == stats["samples"][split]
    assert stats["users"] == len({s.user for split in SPLITS for s in ds.split(split)})
    text = render_stats(stats)
    assert "valid" in text and "1682" in text
