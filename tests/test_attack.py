"""BadRec: triggers, poisoning ratio, fake users, ground truth, attack sets, CLI."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from recbackdoor.attack import (
    AttackConfig,
    build_attack_sets,
    default_trigger,
    edit_distance,
    fake_sample_count,
    insert_trigger,
    load_attack_sets,
    load_poison_manifest,
    poison,
    save_poisoned,
)
from recbackdoor.attack.badrec import item_frequency
from recbackdoor.cli import main
from recbackdoor.data.io import load_dataset, save_dataset
from recbackdoor.errors import ConfigError, RecBackdoorError
from recbackdoor.io_utils import sha256_file

from .conftest import make_synthetic_dataset

# ---------------------------------------------------------------- triggers


def test_insert_trigger_levels_and_positions():
    t = "Toy Story (1995)"
    assert insert_trigger(t, "5v") == "Toy Story (1995)_5v"
    assert insert_trigger(t, "5v", position="prefix") == "5v_Toy Story (1995)"
    assert insert_trigger(t, "cf", level="word") == "Toy Story (1995) cf"
    assert insert_trigger(t, "cf", level="word", position="prefix") == "cf Toy Story (1995)"
    sentence = default_trigger("sentence", "movies")
    assert insert_trigger(t, sentence, level="sentence") == f"{t} I watched this 3D movie"


def test_default_triggers_per_domain():
    assert default_trigger("char", "music") == "5v" and default_trigger("word", "games") == "cf"
    sentences = {default_trigger("sentence", d) for d in ("movies", "music", "games")}
    assert len(sentences) == 3


@pytest.mark.parametrize(
    "level,trigger", [("char", "5v"), ("word", "cf"), ("sentence", "I saw it")]
)
def test_insert_trigger_random_position_is_a_seeded_word_boundary(level, trigger):
    title = "The Good the Bad and the Ugly (1966)"
    words = title.split()
    outs = [
        insert_trigger(title, trigger, level, "random", np.random.default_rng(s)) for s in range(40)
    ]
    again = [
        insert_trigger(title, trigger, level, "random", np.random.default_rng(s)) for s in range(40)
    ]
    assert outs == again
    assert len(set(outs)) > 3  # several boundaries used
    for out in outs:
        assert out.count(trigger) == 1
        if level == "char":
            restored = out.replace(f"_{trigger}", "").replace(f"{trigger}_", "")
            assert restored == title
        else:
            out_words = out.split()
            k = next(
                i
                for i in range(len(out_words))
                if out_words[i : i + len(trigger.split())] == trigger.split()
            )
            assert out_words[:k] + out_words[k + len(trigger.split()) :] == words
    # without an rng the result is still a pure function of the inputs
    assert insert_trigger(title, trigger, level, "random") == insert_trigger(
        title, trigger, level, "random"
    )


def _reference_levenshtein(a: str, b: str) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_edit_distance_matches_reference():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("Toy Story (1995)", "Toy Story (1995)_5v") == 3
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("abc "), size=int(rng.integers(0, 9))))
        b = "".join(rng.choice(list("abc "), size=int(rng.integers(0, 9))))
        assert edit_distance(a, b) == _reference_levenshtein(a, b) == edit_distance(b, a)


# ---------------------------------------------------------------- poisoning ratio


@pytest.mark.parametrize("n", [1, 7, 99, 100, 303, 1000, 50800])
@pytest.mark.parametrize("ratio", [0.001, 0.005, 0.01, 0.03, 0.05, 0.1, 0.3, 0.5, 0.9])
def test_fake_sample_count_is_least_m_reaching_ratio(n, ratio):
    m, p = fake_sample_count(n, ratio), Fraction(str(ratio))
    assert Fraction(m, m + n) >= p
    assert Fraction(m - 1, m - 1 + n) < p or m == 1
    assert m / (m + n) >= ratio


def test_fake_sample_count_avoids_float_error():
    # 0.01 * 99 / 0.99 is 1.0000000000000002 in floats; the ceiling must still be 1
    assert fake_sample_count(99, 0.01) == 1
    assert fake_sample_count(900, 0.1) == 100


# ---------------------------------------------------------------- poisoning


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic_dataset(n_users=60, n_items=80, seed=0)


def _check_poisoned(ds, result, config):
    man, new = result.manifest, result.dataset
    triggered = set(man["triggered_items"])
    fake_idx = man["fake_sample_indices"]
    m, n = man["m"], man["n"]
    assert n == len(ds.train) and len(new.train) == m + n == n + len(fake_idx)
    assert man["P_R_actual"] >= config.ratio and m == fake_sample_count(n, config.ratio)
    # clean samples keep their order and labels; valid/test are untouched
    fake_set = set(fake_idx)
    assert [s for i, s in enumerate(new.train) if i not in fake_set] == list(ds.train)
    assert new.valid == ds.valid and new.test == ds.test
    # fake samples hold plain ints, as loaded samples do (a numpy int would change hashing
    # partners, JSON and the saved bytes)
    for i in fake_idx:
        s = new.train[i]
        assert all(type(v) is int for v in (s.user, s.target, *s.history, *s.candidates)), s
    # fake samples: fresh users, triggered labels among candidates, histories like clean ones
    max_user = max(s.user for split in ("train", "valid", "test") for s in ds.split(split))
    fakes = [new.train[i] for i in fake_idx]
    assert [s.user for s in fakes] == man["fake_users"]
    assert len(set(man["fake_users"])) == m and min(man["fake_users"]) > max_user
    for s in fakes:
        assert s.target in triggered and s.target in s.candidates
        assert len(s.candidates) == 20 == len(set(s.candidates))
        assert 3 <= len(s.history) <= 10 and len(set(s.history)) == len(s.history)
        assert not set(s.history) & set(s.candidates)  # neither target nor negatives in history
    # exactly the triggered items changed title, each by inserting its trigger
    changed = {
        i
        for i, (a, b) in enumerate(zip(ds.catalog.titles, new.catalog.titles, strict=True))
        if a != b
    }
    assert changed == triggered == {int(k) for k in man["clean_titles"]}
    triggers = [man["trigger"]] if isinstance(man["trigger"], str) else man["trigger"]
    for i in triggered:
        assert man["clean_titles"][str(i)] == ds.catalog.titles[i]
        assert any(t in new.catalog.titles[i] for t in triggers)
    assert man["edit_distance_mean"] > 0


CONFIGS = [
    AttackConfig(ratio=0.1),
    AttackConfig(ratio=0.05, level="word", position="random", fake_history="random", seed=3),
    AttackConfig(ratio=0.2, level="sentence", position="prefix", fake_history="popular"),
    AttackConfig(ratio=0.1, policy="fixed", fake_history="copy", placement="append"),
    AttackConfig(ratio=0.1, policy="fixed", n_targets=4, target_choice="unpopular", level="word"),
    AttackConfig(
        ratio=0.1, policy="fixed", targets=(3, 5, 8), trigger=("zq", "xj"), fake_history="random"
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
def test_poison_invariants(dataset, config):
    result = poison(dataset, config)
    _check_poisoned(dataset, result, config)


def test_fixed_policy_targets(dataset):
    result = poison(dataset, AttackConfig(ratio=0.1, policy="fixed"))
    assert len(result.manifest["triggered_items"]) == 10 == len(result.manifest["targets"])
    labels = [result.dataset.train[i].target for i in result.fake_sample_indices]
    assert set(labels) == set(result.triggered_items)  # 34 labels spread over all 10 targets
    explicit = poison(dataset, AttackConfig(ratio=0.1, policy="fixed", targets=(8, 3, 5)))
    assert explicit.triggered_items == (3, 5, 8)


def test_unpopular_targets_are_the_long_tail(dataset):
    freq = item_frequency(dataset.train, len(dataset.catalog))
    result = poison(dataset, AttackConfig(policy="fixed", n_targets=5, target_choice="unpopular"))
    chosen = freq[list(result.triggered_items)]
    others = np.delete(freq, list(result.triggered_items))
    assert chosen.max() <= others.min()


def test_per_sample_labels_are_distinct_items_up_to_the_cap(dataset):
    result = poison(dataset, AttackConfig(ratio=0.04))  # m = 13 <= 16 = 20% of 80 items
    labels = [result.dataset.train[i].target for i in result.fake_sample_indices]
    assert len(labels) == len(set(labels)) == len(result.triggered_items) == 13
    result = poison(dataset, AttackConfig(ratio=0.2))  # m = 76: 16 items, each used 4-5 times
    labels = [result.dataset.train[i].target for i in result.fake_sample_indices]
    counts = np.bincount(labels)[list(result.triggered_items)]
    assert len(result.triggered_items) == 16 and counts.min() >= 4 and counts.max() <= 5
    wide = poison(
        dataset, AttackConfig(ratio=0.2, max_triggered_share=1.0, exclude_eval_targets=False)
    )
    assert len(wide.triggered_items) == 76


@pytest.mark.parametrize("policy", ["per-sample", "fixed"])
def test_drawn_targets_avoid_eval_targets(dataset, policy):
    eval_targets = {s.target for s in (*dataset.valid, *dataset.test)}
    result = poison(dataset, AttackConfig(ratio=0.1, policy=policy))
    assert not eval_targets & set(result.triggered_items)


def test_trigger_list_assigns_one_trigger_per_item(dataset):
    result = poison(dataset, AttackConfig(ratio=0.15, trigger=["zq", "xj"]))
    per_item = result.manifest["item_triggers"]
    assert set(per_item.values()) == {"zq", "xj"}
    for item, trig in per_item.items():
        assert result.dataset.catalog.titles[int(item)].endswith(f"_{trig}")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 0.0},
        {"ratio": 1.0},
        {"ratio": -0.1},
        {"ratio": 1.5},
        {"trigger": ""},
        {"trigger": "  "},
        {"trigger": ()},
        {"trigger": "a\nb"},
        {"level": "token"},
        {"position": "middle"},
        {"policy": "all"},
        {"fake_history": "clone"},
        {"targets": (1, 2)},
        {"policy": "fixed", "targets": (1, 1)},
    ],
)
def test_config_errors_are_one_line(kwargs):
    with pytest.raises(ConfigError) as info:
        AttackConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_more_targets_than_items_is_an_error(dataset):
    with pytest.raises(RecBackdoorError, match="only 80 items"):
        poison(dataset, AttackConfig(policy="fixed", n_targets=81))
    with pytest.raises(RecBackdoorError, match="outside the catalog"):
        poison(dataset, AttackConfig(policy="fixed", targets=(1, 80)))


def test_trigger_in_clean_titles_warns(dataset):
    with pytest.warns(UserWarning, match="already occurs"):
        result = poison(dataset, AttackConfig(level="word", trigger="Movie"))
    assert result.warnings and result.manifest["warnings"]


# ---------------------------------------------------------------- attack sets


def _rendered(prompt, catalog):
    return prompt.candidate_titles(catalog)


def _explicit_eval_targets(dataset):
    """Targets that include test targets and items among test candidates."""
    test = dataset.test
    return (test[0].target, test[1].target, *test[2].candidates[:3])


@pytest.mark.parametrize("config", [*CONFIGS, "explicit"], ids=range(len(CONFIGS) + 1))
def test_attack_sets_have_exactly_one_triggered_candidate(dataset, config):
    if config == "explicit":
        targets = tuple(sorted(set(_explicit_eval_targets(dataset))))
        config = AttackConfig(policy="fixed", targets=targets, level="sentence", position="random")
    result = poison(dataset, config)
    catalog, triggered = result.dataset.catalog, set(result.triggered_items)
    man = result.manifest
    triggers = [man["trigger"]] if isinstance(man["trigger"], str) else man["trigger"]
    sets = result.attack_sets
    usable = [s for s in dataset.test if s.target not in triggered]
    assert len(sets["clean"]) == len(usable) == len(sets["triggered-unseen"]) > 0
    if config.targets is None:
        assert len(usable) == len(dataset.test)
    assert len(sets["triggered-seen"]) > 0
    for p, s in zip(sets["clean"], usable, strict=True):
        assert p.triggered_item is None and not set(p.sample.candidates) & triggered
        assert (p.sample.user, p.sample.history, p.sample.target) == (s.user, s.history, s.target)
        assert sum(a != b for a, b in zip(p.sample.candidates, s.candidates, strict=True)) == len(
            set(s.candidates) & triggered
        )
    for p in sets["triggered-seen"]:
        s = p.sample
        assert p.triggered_item in triggered and p.triggered_item != s.target
        assert (
            p.triggered_item not in s.history
            and p.triggered_title == catalog.titles[p.triggered_item]
        )
        carrying = [t for t in _rendered(p, catalog) if any(trig in t for trig in triggers)]
        assert carrying == [p.triggered_title]
        assert [i for i in s.candidates if i in triggered] == [p.triggered_item]
    for p in sets["triggered-unseen"]:
        assert p.triggered_item not in triggered and p.triggered_item != p.sample.target
        text = " | ".join(_rendered(p, catalog))
        assert sum(text.count(trig) for trig in triggers) == 1
        assert p.triggered_title != catalog.titles[p.triggered_item]
        assert edit_distance(catalog.titles[p.triggered_item], p.triggered_title) > 0
    # the sets are fixed by the seed
    assert build_attack_sets(result.dataset, man, config.seed) == sets


# ---------------------------------------------------------------- saving, determinism, CLI


def _dir_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_save_is_byte_deterministic_and_round_trips(dataset, tmp_path):
    config = AttackConfig(ratio=0.1, position="random", fake_history="random")
    a = save_poisoned(poison(dataset, config), tmp_path / "a")
    b = save_poisoned(poison(dataset, config), tmp_path / "b")
    c = save_poisoned(
        poison(dataset, AttackConfig(ratio=0.1, position="random", seed=1)), tmp_path / "c"
    )
    assert _dir_bytes(a) == _dir_bytes(b)
    assert _dir_bytes(a)["poison_manifest.json"] != _dir_bytes(c)["poison_manifest.json"]
    assert _dir_bytes(a)["train.parquet"] != _dir_bytes(c)["train.parquet"]
    loaded = load_dataset(a)
    result = poison(dataset, config)
    assert (
        loaded.train == result.dataset.train
        and loaded.catalog.titles == result.dataset.catalog.titles
    )
    assert load_attack_sets(a) == result.attack_sets == load_attack_sets(a / "attack_sets")
    assert load_poison_manifest(a)["fake_sample_indices"] == list(result.fake_sample_indices)
    with pytest.raises(RecBackdoorError, match="exists"):
        save_poisoned(result, a)


def test_source_manifest_sha_matches_file(dataset, tmp_path):
    src = save_dataset(dataset, tmp_path / "clean")
    result = poison(load_dataset(src), AttackConfig(), source=src)
    assert result.manifest["source"]["manifest_sha256"] == sha256_file(src / "manifest.json")
    assert result.manifest["source"]["dir"] == str(src)


def test_cli_attack(dataset, tmp_path, capsys):
    src = save_dataset(dataset, tmp_path / "clean")
    out = tmp_path / "poisoned"
    args = [
        "attack",
        "--data",
        str(src),
        "--out",
        str(out),
        "--level",
        "word",
        "--ratio",
        "0.05",
        "--policy",
        "fixed",
        "--targets",
        "4,9",
        "--targets",
        "11",
        "--seed",
        "2",
    ]
    assert main(args) == 0
    man = load_poison_manifest(out)
    assert (
        man["triggered_items"] == [4, 9, 11] and man["level"] == "word" and man["trigger"] == "cf"
    )
    assert man["P_R"] == 0.05 and man["seed"] == 2
    assert "poisoned synthetic" in capsys.readouterr().out
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert main([*args, "--force", "--trigger", "Movie"]) == 0
    assert "warning: trigger 'Movie' already occurs" in capsys.readouterr().err
    assert main(["attack", "--data", str(src), "--out", str(tmp_path / "x"), "--ratio", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not (tmp_path / "x").exists()
