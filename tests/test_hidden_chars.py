"""Invisible and look-alike characters: kept byte-exact by the loaders, flagged by the
``hidden-chars`` rule only where a real title would not have them."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.attack import AttackConfig, poison
from recbackdoor.attack.families import apply_member, stealth_members
from recbackdoor.data.io import load_dataset, save_dataset
from recbackdoor.defense.baselines.hidden_chars import HiddenCharDetector, hidden_char_reason
from recbackdoor.defense.registry import detector_entry

from .conftest import make_synthetic_dataset


@pytest.mark.parametrize("title", ["Toy St\u043ery", "T\u03bfy Story", "Toy S\u200btory", "Fargo\u2060 (1996)",
                                   "\u0412FI", "Heat (199\ufeff5)"])
def test_doctored_titles_are_flagged(title):
    assert hidden_char_reason(title) is not None


@pytest.mark.parametrize("title", ["KoЯn", "Zемфира", "EPΘCH", "Мумий Тролль", "Mötley Crüe", "Tóy Story",
                                   "\U0001f468\u200d\U0001f469", "Toy Story (1995)", "Hyphen\u00adated"])
def test_real_looking_titles_are_not(title):
    assert hidden_char_reason(title) is None


def test_real_catalogs_have_almost_no_such_title(shared_data):
    """The rule's false-positive rate on the real catalogs (every title is clean there)."""
    from recbackdoor.data.prepare import prepare_dataset

    for name, rel in (("lastfm", "lastfm/llara"), ("ml100k", "movielens/ml-100k"), ("steam", "steam/llara")):
        titles = prepare_dataset(name, shared_data / rel, 0).catalog.titles
        flagged = [t for t in titles if hidden_char_reason(t)]
        assert len(flagged) <= 0.001 * len(titles), (name, flagged)


def test_hidden_chars_detector_catches_the_lookalike_family_but_accents(tmp_path):
    """Every zero-width and Cyrillic / Greek member is caught, the held-out ones included (the
    rule knows Unicode, not the family); an added accent is not."""
    dataset = make_synthetic_dataset(n_users=60, n_items=80, seed=0)
    result = poison(dataset, AttackConfig(level="char", trigger_family="lookalike", ratio=0.2, position="random"))
    man = result.manifest
    detector = detector_entry("hidden-chars").build()
    for item, member in man["item_triggers"].items():
        flagged = detector.score([man["triggered_titles"][item]])[0] == 1.0
        assert flagged == (member != "accent"), (member, man["triggered_titles"][item])
    clean = [t for i, t in enumerate(result.dataset.catalog.titles) if str(i) not in man["item_triggers"]]
    assert detector.score(clean).sum() == 0
    rng = np.random.default_rng(1)
    for member in stealth_members("lookalike"):
        doctored = apply_member("Toy Story (1995)", member, "lookalike", "char", "random", rng)
        assert (hidden_char_reason(doctored) is not None) == (member != "accent")


def test_loaders_keep_invisible_and_lookalike_characters_byte_exact(tmp_path):
    dataset = make_synthetic_dataset(n_users=30, n_items=40, seed=1)
    odd = {0: "Toy S\u200btory", 1: "St\u043ery (1995)", 2: "KoЯn", 3: "Tóy"}
    dataset = dataset.replace(catalog=dataset.catalog.with_titles(odd))
    save_dataset(dataset, tmp_path / "d")
    titles = load_dataset(tmp_path / "d").catalog.titles
    assert all(titles[i] == t for i, t in odd.items())
    from recbackdoor.defense.pscanner.catalog_io import read_catalog

    (tmp_path / "c.csv").write_text("id,title\n" + "\n".join(f"{i},{t}" for i, t in odd.items()) + "\n", encoding="utf-8")
    ids, read = read_catalog(tmp_path / "c.csv", "title", "id")
    assert list(read) == list(odd.values())
    assert isinstance(HiddenCharDetector().fit(read, "movies").score(read), np.ndarray)
