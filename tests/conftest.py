"""Shared test fixtures: the reference data folder and a small synthetic dataset.

Helpers for one area belong in that area's test module; keep this file small.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.data.samples import build_samples
from recbackdoor.data.types import Catalog, SplitDataset

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECBACKDOOR_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lastfm(shared_data) -> SplitDataset:
    """LLaRA's LastFM split, prepared with the defaults (seed 0); skipped when absent."""
    from recbackdoor.data.prepare import prepare_dataset

    source = shared_data / "lastfm" / "llara"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    return prepare_dataset("lastfm", source, 0)


def make_synthetic_dataset(n_users: int = 60, n_items: int = 80, seed: int = 0) -> SplitDataset:
    """A small movie dataset with random sequences: fast, and exercises every split."""
    rng = np.random.default_rng(seed)
    titles = tuple(f"Movie {i} ({1950 + i % 50})" for i in range(n_items))
    catalog = Catalog(titles=titles, domain="movies")
    sequences = {u: rng.choice(n_items, size=int(rng.integers(5, 15)), replace=False).tolist() for u in range(n_users)}
    splits = build_samples(sequences, n_items, seed=seed)
    return SplitDataset(catalog=catalog, manifest={"dataset": "synthetic", "seed": seed}, **splits)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset saved once (30 users, 40 items) for training tests; read only."""
    from recbackdoor.data.io import save_dataset

    out = tmp_path_factory.mktemp("data") / "synthetic"
    save_dataset(make_synthetic_dataset(n_users=30, n_items=40, seed=1), out)
    return out


@pytest.fixture
def synthetic_dataset() -> SplitDataset:
    return make_synthetic_dataset()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and the CI box is small and shared: one torch
    thread avoids two fighting. Modules opt in with ``pytestmark = pytest.mark.usefixtures``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
