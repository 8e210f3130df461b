"""Sanitize policies against a hand-made poisoned dataset with known ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from recbackdoor.data.samples import draw_candidates
from recbackdoor.data.types import Sample, SplitDataset
from recbackdoor.defense.sanitize import sanitize, strip_span
from recbackdoor.errors import ConfigError

from .conftest import make_synthetic_dataset

TRIGGER = "5v"


def hand_poisoned(n_fake: int = 12, seed: int = 0) -> tuple[SplitDataset, dict]:
    """Triggered titles on 4 items no clean training sample targets, plus fake samples
    (appended to train) whose targets are those items; the manifest says which is which."""
    clean = make_synthetic_dataset(n_users=40, n_items=150, seed=seed)
    n_items = len(clean.catalog)
    clean_targets = {s.target for s in clean.train}
    triggered = [i for i in range(n_items) if i not in clean_targets][:4]
    assert len(triggered) == 4, "fixture needs 4 items that no clean sample targets"
    rng = np.random.default_rng(seed)
    fake = []
    first_user = 1 + max(s.user for s in (*clean.train, *clean.valid, *clean.test))
    for j in range(n_fake):
        target = triggered[j % len(triggered)]
        history = tuple(int(i) for i in rng.choice([i for i in range(n_items) if i != target], 5, replace=False))
        fake.append(Sample(first_user + j, history, draw_candidates(rng, n_items, target, history), target))
    catalog = clean.catalog.with_titles({i: f"{clean.catalog.titles[i]}_{TRIGGER}" for i in triggered})
    train = (*clean.train, *fake)
    manifest = {
        "triggered_items": triggered,
        "fake_sample_indices": list(range(len(clean.train), len(train))),
        "clean_titles": {str(i): clean.catalog.titles[i] for i in triggered},
        "trigger": TRIGGER,
        "level": "char",
    }
    return clean.replace(catalog=catalog, train=train), manifest


def test_drop_target_removes_exactly_the_fake_samples():
    ds, man = hand_poisoned()
    out, report = sanitize(ds, man["triggered_items"], "drop-target", poison_manifest=man)
    assert report["removed_train_indices"] == man["fake_sample_indices"]
    assert report["ground_truth"] == {
        "fake_samples": 12, "fake_removed": 12, "fake_kept": 0, "clean_removed": 0,
    }  # fmt: skip
    assert len(out.train) == len(ds.train) - 12
    assert out.valid == ds.valid and out.test == ds.test and out.catalog == ds.catalog
    assert out.manifest["sanitized"]["policy"] == "drop-target"


def test_drop_any_removes_more_and_keeps_valid_test():
    ds, man = hand_poisoned()
    target, _ = sanitize(ds, man["triggered_items"], "drop-target", poison_manifest=man)
    anyw, report = sanitize(ds, man["triggered_items"], "drop-any", poison_manifest=man)
    assert len(anyw.train) < len(target.train)
    assert report["ground_truth"]["fake_removed"] == 12 and report["ground_truth"]["clean_removed"] > 0
    flagged = set(man["triggered_items"])
    for s in anyw.train:  # nothing left mentions a flagged item
        assert not flagged & {*s.history, *s.candidates, s.target}
    assert anyw.valid == ds.valid and anyw.test == ds.test


def test_strip_restores_clean_titles_and_keeps_samples():
    ds, man = hand_poisoned()
    spans = {i: f"_{TRIGGER}" for i in man["triggered_items"]}
    out, report = sanitize(ds, man["triggered_items"], "strip", spans, poison_manifest=man)
    assert out.train == ds.train and out.valid == ds.valid and out.test == ds.test
    for key, title in man["clean_titles"].items():
        assert out.catalog.titles[int(key)] == title
    assert report["ground_truth"]["titles_restored_exactly"] == 4
    assert report["strip_fallback"] is None and report["removed_samples"] == 0


def test_strip_falls_back_to_drop_target_without_a_span():
    ds, man = hand_poisoned()
    items = man["triggered_items"]
    spans = {items[0]: TRIGGER, items[1]: "not-in-title", items[2]: None}  # items[3]: absent
    out, report = sanitize(ds, items, "strip", spans, poison_manifest=man)
    assert out.catalog.titles[items[0]] == man["clean_titles"][str(items[0])]
    assert report["strip_fallback_items"] == sorted(items[1:])
    assert "drop-target" in report["strip_fallback"]
    assert {ds.train[k].target for k in report["removed_train_indices"]} == set(items[1:])
    assert report["ground_truth"]["clean_removed"] == 0


def test_flagging_clean_items_costs_clean_samples():
    ds, man = hand_poisoned()
    innocent = ds.train[0].target
    _, report = sanitize(ds, [*man["triggered_items"], innocent], "drop-target", poison_manifest=man)
    n_innocent = sum(s.target == innocent for s in ds.train)
    assert report["ground_truth"]["clean_removed"] == n_innocent > 0


def test_strip_span_tidies_the_cut():
    assert strip_span("Toy Story (1995)_5v", "_5v") == "Toy Story (1995)"
    assert strip_span("Toy Story (1995)_5v", "5v") == "Toy Story (1995)"
    assert strip_span("5v_Babe (1995)", "5v") == "Babe (1995)"
    assert strip_span("Toy cf Story (1995)", "cf") == "Toy Story (1995)"
    assert strip_span("Fargo (1996) I watched this 3D movie", "I watched this 3D movie") == "Fargo (1996)"
    assert strip_span("Heat", "Heat") is None and strip_span("Heat", "zz") is None


def test_sanitize_rejects_bad_policy_and_items():
    ds, man = hand_poisoned()
    with pytest.raises(ConfigError, match="unknown sanitize policy 'drop-all'"):
        sanitize(ds, [1], "drop-all")
    with pytest.raises(ConfigError, match="outside the catalog"):
        sanitize(ds, [len(ds.catalog)], "drop-target")
