"""Core data types, sample construction and Parquet round trip."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.data.io import load_dataset, save_dataset
from recbackdoor.data.samples import build_samples, draw_candidates, split_users
from recbackdoor.data.types import Sample
from recbackdoor.errors import RecBackdoorError

from .conftest import make_synthetic_dataset


def test_draw_candidates_excludes_history_and_contains_target():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cands = draw_candidates(rng, 50, target=7, exclude=[1, 2, 3])
        assert len(cands) == 20 and len(set(cands)) == 20
        assert 7 in cands and not {1, 2, 3} & set(cands)


def test_draw_candidates_too_small_catalog():
    with pytest.raises(RecBackdoorError):
        draw_candidates(np.random.default_rng(0), 15, target=0)


def test_split_users_is_seeded_partition():
    users = list(range(100))
    a, b, c = split_users(users, 1), split_users(users, 1), split_users(users, 2)
    assert a == b and a != c
    assert sorted(a["train"] + a["valid"] + a["test"]) == users
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (80, 10, 10)


def test_build_samples_prefixes():
    samples = build_samples({0: list(range(12)), 1: [0, 1], 2: list(range(20, 30))}, 40, seed=0)
    train = [s for split in samples.values() for s in split if s.user == 0]
    if train and len(train) > 1:  # user 0 landed in train: every prefix from length 3
        assert [s.target for s in train] == list(range(3, 12))
        assert train[-1].history == tuple(range(1, 11))  # last <= 10 items
    assert all(s.user != 1 for split in samples.values() for s in split)  # too short


def test_sample_requires_target_in_candidates():
    with pytest.raises(ValueError):
        Sample(0, (1, 2, 3), (4, 5), 9)


def test_parquet_round_trip_is_byte_identical(tmp_path):
    ds = make_synthetic_dataset()
    save_dataset(ds, tmp_path / "a")
    save_dataset(load_dataset(tmp_path / "a"), tmp_path / "b")
    loaded = load_dataset(tmp_path / "b")
    assert loaded.train == ds.train and loaded.test == ds.test and loaded.catalog.titles == ds.catalog.titles
    for name in ("catalog.parquet", "train.parquet", "valid.parquet", "test.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_save_refuses_existing_dir_and_leaves_nothing_on_error(tmp_path):
    ds = make_synthetic_dataset()
    save_dataset(ds, tmp_path / "out")
    with pytest.raises(RecBackdoorError, match="exists"):
        save_dataset(ds, tmp_path / "out")
    save_dataset(ds, tmp_path / "out", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
