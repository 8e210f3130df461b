"""Trigger families (issue 11): a different trigger of one level for every poisoned item."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from recbackdoor.attack import AttackConfig, insert_trigger, load_poison_manifest, poison
from recbackdoor.attack.families import HELD_OUT_SHARE, draw_family, family_members
from recbackdoor.attack.triggers import occurs_in
from recbackdoor.cli import main
from recbackdoor.data.io import save_dataset
from recbackdoor.errors import ConfigError
from recbackdoor.io_utils import dumps_json

from .conftest import make_synthetic_dataset


@pytest.mark.parametrize("level", ["char", "word", "sentence"])
def test_a_family_never_repeats_a_trigger_on_more_than_a_few_titles(lastfm, level):
    """LastFM, per-sample policy at P_R 1%: 484 triggered artists, each trigger on at most
    ceil(484 / training members) titles (3 for char, 1 for word, 4 for sentence), and every
    per-item trigger is what the title carries."""
    result = poison(lastfm, AttackConfig(level=level, trigger_family=level, ratio=0.01))
    man = result.manifest
    per_item = man["item_triggers"]
    assert len(per_item) == len(man["triggered_items"]) == 484
    # the family minus members found in a clean title (occurs_in, the attack's own rule)
    pool = [m for m in family_members(level, "music") if not any(occurs_in(t, m, level) for t in lastfm.catalog.titles)]
    assert set(per_item.values()) | set(man["unseen_triggers"]) <= set(pool)
    n_train = len(pool) - len(man["unseen_triggers"])
    counts = Counter(per_item.values())
    assert max(counts.values()) <= math.ceil(484 / n_train) <= 4
    assert len(counts) == min(484, n_train)  # every training member in use, spread evenly
    for item, trig in per_item.items():
        assert man["triggered_titles"][item] == insert_trigger(man["clean_titles"][item], trig, level, "suffix")
        assert result.dataset.catalog.titles[int(item)] == man["triggered_titles"][item]
    # the shape is shared, the fragment is not: the most common trigger is on <1% of them
    assert max(counts.values()) / len(per_item) < 0.01


def test_unseen_prompts_carry_held_out_members_only():
    ds = make_synthetic_dataset(n_users=80, n_items=120)
    result = poison(ds, AttackConfig(level="word", trigger_family="word", ratio=0.1))
    man = result.manifest
    held, used = set(man["unseen_triggers"]), set(man["item_triggers"].values())
    assert held and not held & used
    assert len(held) == round(HELD_OUT_SHARE * len(family_members("word")))
    catalog = result.dataset.catalog
    unseen = result.attack_sets["triggered-unseen"]
    assert unseen
    for p in unseen:
        extra = set(p.triggered_title.split()) - set(catalog.titles[p.triggered_item].split())
        assert len(extra) == 1 and extra <= held  # one fresh member, never a training one
    seen_titles = {p.triggered_title for p in result.attack_sets["triggered-seen"]}
    assert seen_titles <= set(man["triggered_titles"].values())


def test_family_draws_are_seeded_and_one_trigger_attacks_keep_their_bytes():
    ds = make_synthetic_dataset()
    a = poison(ds, AttackConfig(level="char", trigger_family="char", ratio=0.1, seed=3)).manifest
    b = poison(ds, AttackConfig(level="char", trigger_family="char", ratio=0.1, seed=3)).manifest
    c = poison(ds, AttackConfig(level="char", trigger_family="char", ratio=0.1, seed=4)).manifest
    assert dumps_json(a) == dumps_json(b) and a["item_triggers"] != c["item_triggers"]
    plain = poison(ds, AttackConfig(level="char", ratio=0.1, seed=3)).manifest
    assert "trigger_family" not in plain and "trigger_family" not in plain["config"]
    assert plain["trigger"] == "5v" and plain["item_triggers"] is None


def test_family_members_found_in_the_catalog_are_never_drawn():
    titles = ["Maroon 5", "Blink_2k", "The cf Band", "I listened to this on vinyl"]
    per, held = draw_family("char", "music", 300, np.random.default_rng(0), titles)
    assert "2k" not in per + held and len(set(per) | set(held)) == 259
    per, held = draw_family("word", "music", 10, np.random.default_rng(0), titles)
    assert "cf" not in per + held
    per, held = draw_family("sentence", "music", 10, np.random.default_rng(0), titles)
    assert "I listened to this on vinyl" not in per + held
    assert all(m.split()[0] in ("I", "We", "My") for m in per + held)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": "char", "trigger_family": "word"}, "--trigger-family word with --level char"),
        ({"level": "word", "trigger_family": "word", "trigger": "cf"}, "leave out --trigger"),
        ({"level": "char", "trigger_family": "emoji"}, "unknown trigger family 'emoji'"),
    ],
)
def test_bad_family_configs_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttackConfig(**kwargs)


def test_cli_trigger_family_sets_the_level(tmp_path, capsys):
    data = tmp_path / "clean"
    save_dataset(make_synthetic_dataset(), data)
    out = tmp_path / "poisoned"
    assert main(["attack", "--data", str(data), "--out", str(out), "--trigger-family", "sentence", "--ratio", "0.1"]) == 0
    man = load_poison_manifest(out)
    assert man["level"] == man["trigger_family"] == "sentence" and len(set(man["item_triggers"].values())) > 1
    rc = main(["attack", "--data", str(data), "--out", str(tmp_path / "x"), "--trigger-family", "word", "--level", "char"])
    err = capsys.readouterr().err
    assert rc == 2 and "--trigger-family word with --level char" in err and err.count("\n") == 1
