"""BadRec on the real LastFM data of LLaRA (skipped when ../shared/data is absent)."""

from __future__ import annotations

from recbackdoor.attack import AttackConfig, fake_sample_count, poison

from .test_attack import _check_poisoned


def test_badrec_on_lastfm(lastfm):
    config = AttackConfig(ratio=0.01)
    result = poison(lastfm, config)
    _check_poisoned(lastfm, result, config)
    man = result.manifest
    assert man["m"] == fake_sample_count(len(lastfm.train), 0.01) > 400
    assert man["edit_distance_mean"] == 3.0  # "_5v" appended to every triggered title
    sets = result.attack_sets
    assert {len(p) for p in sets.values()} == {len(lastfm.test)}  # no test prompt lost
    catalog = result.dataset.catalog
    for p in sets["triggered-seen"]:
        assert sum("_5v" in t for t in p.candidate_titles(catalog)) == 1
    for p in sets["triggered-unseen"]:
        assert " ".join(p.candidate_titles(catalog)).count("5v") == 1
