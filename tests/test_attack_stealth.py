"""Stealthy trigger families: an attacker who knows the defense varies the token's shape, uses
invisible or look-alike characters, or words a real title could carry."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from recbackdoor.attack import AttackConfig, poison
from recbackdoor.attack.families import (
    CYRILLIC,
    GREEK,
    STEALTH_FAMILIES,
    ZERO_WIDTH,
    apply_member,
    family_level,
    stealth_members,
)
from recbackdoor.errors import ConfigError
from recbackdoor.io_utils import dumps_json

from .conftest import make_synthetic_dataset


def _poison(family: str, position: str = "suffix", seed: int = 0, dataset=None):
    dataset = dataset or make_synthetic_dataset(n_users=60, n_items=80, seed=0)
    config = AttackConfig(level=family_level(family), trigger_family=family, ratio=0.1, position=position, seed=seed)
    return poison(dataset, config)


@pytest.mark.parametrize("family", STEALTH_FAMILIES)
def test_stealthy_family_per_item_triggers_and_held_out_members(family):
    result = _poison(family)
    man = result.manifest
    per_item, held = man["item_triggers"], man["unseen_triggers"]
    assert man["trigger_family"] == family and len(per_item) == len(man["triggered_items"])
    assert held and not set(held) & set(per_item.values())  # unseen prompts use members no title carried
    assert set(per_item.values()) | set(held) <= set(stealth_members(family, "movies"))
    for item in per_item:
        poisoned, clean = man["triggered_titles"][item], man["clean_titles"][item]
        assert poisoned != clean and result.dataset.catalog.titles[int(item)] == poisoned
    for prompt in result.attack_sets["triggered-unseen"]:
        assert prompt.triggered_title != result.dataset.catalog.titles[prompt.triggered_item]
    assert dumps_json(_poison(family).manifest) == dumps_json(man)  # seeded: the same bytes
    assert dumps_json(_poison(family, seed=1).manifest) != dumps_json(man)


def test_lookalike_titles_read_the_same_and_differ_in_one_character():
    man = _poison("lookalike", position="random").manifest
    invisible = set(ZERO_WIDTH.values())
    for item, member in man["item_triggers"].items():
        clean, poisoned = man["clean_titles"][item], man["triggered_titles"][item]
        if member in ZERO_WIDTH or not any(ch in poisoned for ch in (*CYRILLIC.values(), *GREEK.values(), "á", "é", "í", "ó", "ú", "ñ", "Á", "É", "Í", "Ó", "Ú")):
            assert "".join(ch for ch in poisoned if ch not in invisible) == clean  # an invisible insertion
            assert any(unicodedata.category(ch) == "Cf" for ch in poisoned)
        else:
            assert len(poisoned) == len(clean) and sum(a != b for a, b in zip(poisoned, clean, strict=True)) == 1


def test_shape_members_vary_case_digits_length_and_glue():
    members = stealth_members("shape")
    tokens = [m.lstrip("_-. ") for m in members]
    assert {len(t) for t in tokens} == {2, 3, 4}
    assert any(t.isupper() for t in tokens) and any(t.islower() for t in tokens) and any(any(c.isdigit() for c in t) for t in tokens)
    assert {m[0] for m in members if m[0] in "_-. "} == {"_", "-", ".", " "} and any(m[0].isalnum() for m in members)
    rng = np.random.default_rng(0)
    assert apply_member("Toy Story", " Qz7", "shape", "char", "suffix", rng) == "Toy Story Qz7"  # its own token
    assert apply_member("Toy Story", "-Qz7", "shape", "char", "prefix", rng) == "Qz7-Toy Story"
    assert apply_member("Toy Story", "Qz7", "shape", "char", "suffix", rng) == "Toy StoryQz7"


def test_domain_words_never_come_from_a_clean_title():
    dataset = make_synthetic_dataset(n_users=60, n_items=80, seed=0)
    titles = list(dataset.catalog.titles)
    titles[0] = "Vertigo Remastered (1958)"  # a clean title already carries one domain phrase
    dataset = dataset.replace(catalog=dataset.catalog.with_titles({0: titles[0]}))
    man = _poison("domain", dataset=dataset).manifest
    assert "Remastered" not in set(man["item_triggers"].values()) | set(man["unseen_triggers"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"level": "word", "trigger_family": "shape"}, "family is of level char"),
    ({"level": "char", "trigger_family": "domain"}, "family is of level word"),
    ({"level": "char", "trigger_family": "emoji"}, "unknown trigger family 'emoji'"),
])
def test_bad_stealthy_family_specs_are_one_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttackConfig(**kwargs)


def test_study_config_takes_a_stealthy_family_with_its_level(tmp_path):
    from recbackdoor.experiments.config import load_config

    good = tmp_path / "good.toml"
    good.write_text('[attack]\nlevels = ["char"]\ntrigger_family = "lookalike"\n')
    assert load_config(good).attack.attacks() == [("char", "lookalike")]
    bad = tmp_path / "bad.toml"
    bad.write_text('[attack]\nlevels = ["word"]\ntrigger_family = "lookalike"\n')
    with pytest.raises(ConfigError, match="of level\\(s\\) char"):
        load_config(bad)
    worse = tmp_path / "worse.toml"
    worse.write_text('[attack]\nlevels = ["char"]\ntrigger_family = "zalgo"\n')
    with pytest.raises(ConfigError, match="unknown trigger family 'zalgo'"):
        load_config(worse)


def test_study_config_takes_a_list_of_families_one_attack_each(tmp_path):
    from recbackdoor.experiments.config import load_config

    cfg = tmp_path / "families.toml"
    cfg.write_text('[attack]\nlevels = ["char", "word"]\ntrigger_family = ["shape", "domain", "lookalike"]\n')
    assert load_config(cfg).attack.attacks() == [("char", "shape"), ("word", "domain"), ("char", "lookalike")]
    for body, message in (
        ('levels = ["char"]\ntrigger_family = ["shape", "domain"]', "of level\\(s\\) char, word"),
        ('levels = ["char"]\ntrigger_family = ["shape", "shape"]', "distinct family names"),
        ('levels = ["char"]\ntrigger_family = []', "distinct family names"),
        ('levels = ["char"]\ntrigger_family = ["shape", "zalgo"]', "unknown trigger family 'zalgo'"),
    ):
        cfg.write_text(f"[attack]\n{body}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(cfg)
    cfg.write_text('[attack]\nlevels = ["char", "word"]\ntrigger_family = true\n')
    assert load_config(cfg).attack.attacks() == [("char", "char"), ("word", "word")]
    cfg.write_text('[attack]\nlevels = ["word"]\n')
    assert load_config(cfg).attack.attacks() == [("word", None)]
