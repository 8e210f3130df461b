"""P-Scanner model stages on the tiny-random backbone: scoring, thresholds, training with
rounds and their log, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recbackdoor.defense.base import Detector
from recbackdoor.defense.pscanner import PScanner, ScannerConfig, load_scanner, train_scanner
from recbackdoor.defense.pscanner.calibrate import (
    build_validation,
    calibrate,
    choose_threshold,
    with_margin,
)
from recbackdoor.defense.pscanner.optimise import add_lora, answer_strings, sft_yes_no
from recbackdoor.defense.pscanner.rounds import ROUND_KEYS
from recbackdoor.defense.pscanner.scanner import scanner_prompt, yes_probability
from recbackdoor.errors import ConfigError, RecBackdoorError

WORDS_A = ("Blue", "Night", "City", "Lost", "Wild", "Silent", "Golden", "Broken")
WORDS_B = ("River", "Dream", "Heart", "Road", "Star", "Garden", "Empire", "Summer")
TITLES = [f"{a} {b} ({1950 + 7 * i % 60})" for i, (a, b) in enumerate((a, b) for a in WORDS_A for b in WORDS_B)]


def tiny_config(**kw) -> ScannerConfig:
    base = dict(
        backbone="tiny-random", dtype="fp32", rounds=1, n_train=48, n_policy=8, n_rule_triggers=4,
        n_agent_triggers=2, n_val_clean=24, round_triggers=2, round_replay=8, agent_pairs=2,
        batch_size=8, score_batch_size=16,
    )  # fmt: skip
    base.update(kw)
    return ScannerConfig(**base)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("scanner") / "sc"
    sc = train_scanner(TITLES, "movies", tiny_config(), out=out, progress=False)
    return sc, out


@pytest.fixture(scope="module")
def tiny():
    from recbackdoor.models.backbones import load_backbone

    model, tok = load_backbone("tiny-random", dtype="fp32")
    return add_lora(model, seed=0), tok


def test_scores_shape_range_and_batch_independence(tiny):
    model, tok = tiny
    prompts = [scanner_prompt(t, "movies") for t in TITLES[:10]] + [scanner_prompt("A much longer title " * 3, "movies")]
    s_big = yes_probability(model, tok, prompts, batch_size=16)
    s_small = yes_probability(model, tok, prompts, batch_size=3)
    s_alone = np.array([yes_probability(model, tok, [p])[0] for p in prompts[:3]])
    assert s_big.shape == (11,) and np.all((s_big > 0) & (s_big < 1))
    assert np.allclose(s_big, s_small, atol=1e-5)
    assert np.allclose(s_big[:3], s_alone, atol=1e-5)  # left padding does not move a score
    assert len(set(np.round(s_big, 6))) > 1
    assert yes_probability(model, tok, []).shape == (0,)


def test_supervised_training_moves_scores_towards_labels():
    from recbackdoor.models.backbones import load_backbone

    base, tok = load_backbone("tiny-random", dtype="fp32")
    model = add_lora(base, r=8, seed=0)
    pos = [scanner_prompt(t + " zq9", "movies") for t in TITLES[:24]]
    neg = [scanner_prompt(t, "movies") for t in TITLES[:24]]
    before = yes_probability(model, tok, pos).mean() - yes_probability(model, tok, neg).mean()
    info = sft_yes_no(model, tok, pos + neg, [1] * 24 + [0] * 24, lr=5e-3, epochs=8, batch_size=8, progress=False)
    after = yes_probability(model, tok, pos).mean() - yes_probability(model, tok, neg).mean()
    assert info["loss_last"] < info["loss_first"]
    assert after > before + 0.2


def test_answer_strings_fall_back_for_split_tokens(tiny):
    _, tok = tiny
    yes, no, yes_id, no_id = answer_strings(tok)
    assert yes_id != no_id and yes.strip().lower() == "yes" and no.strip().lower() == "no"


def test_threshold_at_target_fpr_and_best_f1():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 0.8, size=1000)
    thr = choose_threshold(np.zeros(1000, int), clean, clean, "fpr", 0.01)
    assert np.mean(clean >= thr) <= 0.01 and np.mean(clean >= thr - 1e-3) > 0.005
    y = np.array([0] * 98 + [1, 1])
    s = np.concatenate([np.linspace(0.0, 0.5, 98), [0.7, 0.9]])
    thr = choose_threshold(y, s, s[:98], "best-f1", 0.01)
    assert 0.5 < thr <= 0.7  # between the best clean score and the weakest positive
    assert with_margin(s, 0.7) == pytest.approx(thr)
    flags = s >= thr
    assert flags[-2:].all() and not flags[:98].any()


def test_calibration_uses_a_realistic_share():
    clean = [f"title {i}" for i in range(300)]
    val = build_validation(clean, {"word": ["zebu", "ibex"]}, 0.01, np.random.default_rng(0))
    assert [int(c["y"].sum()) for c in val.catalogs] == [3, 3]
    fake = lambda ts: np.array([0.9 if ("zebu" in t or "ibex" in t) else 0.1 + 0.001 * (hash(t) % 100) for t in ts])  # noqa: E731
    rep = calibrate(fake, val, "max", "best-f1", 0.01, {"min_count": 3, "max_share": 0.1})
    assert rep["title"]["all"]["f1"] == 1.0 and 0.2 < rep["threshold_title"] < 0.9
    assert rep["evidence"]["all"]["f1"] == 1.0 and len(rep["evidence_thresholds"]) == 2
    assert rep["reference"]["titles"] == clean and np.allclose(rep["reference"]["scores"], fake(clean))


def test_training_writes_rounds_log_and_scanner_files(trained):
    sc, out = trained
    assert isinstance(sc, Detector) and sc.name == "pscanner"
    assert {p.name for p in out.iterdir()} >= {"adapter", "scanner.json", "reference.json", "rounds.jsonl", "timing.json"}
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    lines = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1]
    for x in lines:
        assert set(ROUND_KEYS) <= set(x)
        assert 0.0 <= x["recall_fresh"] <= 1.0 and 0.0 <= x["fpr_clean"] <= 1.0
        assert 0.0 <= x["agent_evasion_rate"] <= 1.0 and x["n_fresh_triggers"] > 0
    assert lines[0]["update"]["hard_positives"] >= 0 and "agent" in lines[0]["update"]
    assert lines[1]["update"] is None
    meta = json.loads((out / "scanner.json").read_text())
    assert meta["backbone"] == "tiny-random" and meta["domain"] == "movies"
    assert meta["threshold"] == 0.5 and meta["evidence_thresholds"] == sc.evidence_thresholds
    assert meta["log"]["rounds"][0]["round"] == 0 and "sft" in meta["log"] and meta["log"]["policy"]["method"] == "dpo"
    held = {t.lower() for t in meta["config"]["exclude_triggers"]}
    used = {t.lower() for ts in meta["log"]["train_triggers"].values() for t in ts}
    assert "5v" in held and not held & used


def test_save_load_round_trip_gives_same_scores(trained):
    sc, out = trained
    titles = TITLES[:12] + ["Blue River (1950)_q9z", "zebu Night Star (1961)"]
    again = load_scanner(out)
    assert again.threshold == pytest.approx(sc.threshold_title)  # not fitted: per-title scores
    assert np.allclose(sc.title_scores(titles), again.title_scores(titles), atol=1e-6)
    sc.fit(TITLES, "movies")
    again.fit(TITLES, "movies")
    assert np.allclose(sc.score(titles), again.score(titles), atol=1e-6)
    assert again.threshold == 0.5 and again.evidence_thresholds == sc.evidence_thresholds
    # the clean reference: the held-out validation titles, scored by the final weights
    assert again.reference["titles"] == sc.reference["titles"] and len(sc.reference["titles"]) == sc.log["n_val_clean"] > 0
    assert np.allclose(again.reference["scores"], sc.reference["scores"], atol=1e-9)
    assert np.allclose(sc.title_scores(sc.reference["titles"]), sc.reference["scores"], atol=1e-6)
    info = again.explain(titles[-1])
    assert set(info) == {"title", "own", "fragment", "group"} and 0 <= info["own"] <= 1
    assert info["fragment"] == "" or info["fragment"].lower() in titles[-1].lower()
    again.set_channels("llm")
    assert again.threshold == pytest.approx(again.threshold_title)
    assert np.allclose(again.score(titles), again.title_scores(titles))


def test_same_seed_same_scanner(trained, tmp_path):
    sc, out = trained
    cfg = tiny_config(rounds=0, use_agent=False, n_train=24, n_policy=4)
    sc2 = train_scanner(TITLES, "movies", cfg, out=tmp_path / "a", progress=False)
    sc3 = train_scanner(TITLES, "movies", cfg, out=tmp_path / "b", progress=False)
    for name in ("scanner.json", "rounds.jsonl", "adapter/adapter_model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sc2.threshold_title == sc3.threshold_title
    assert np.array_equal(sc2.title_scores(TITLES[:8]), sc3.title_scores(TITLES[:8]))
    assert len(sc2.log["rounds"]) == 1


def test_fit_checks_domain_and_unfitted_scanner_errors(trained):
    sc, _ = trained
    with pytest.raises(RecBackdoorError, match="domain"):
        sc.fit(TITLES, "games")
    with pytest.raises(RecBackdoorError, match="no model"):
        PScanner(backbone="tiny-random").title_scores(["x"])
    with pytest.raises(RecBackdoorError, match="not a scanner directory"):
        load_scanner(".")


def test_bad_config_is_a_clear_error():
    with pytest.raises(RecBackdoorError, match="evidence"):
        train_scanner(TITLES, "movies", tiny_config(evidence="sometimes"), progress=False)
    with pytest.raises(RecBackdoorError, match="domain"):
        train_scanner(TITLES, "books", tiny_config(), progress=False)
    with pytest.raises(RecBackdoorError, match="at least 20"):
        train_scanner(TITLES[:5], "movies", tiny_config(), progress=False)


def test_two_channel_thresholds_separate_odd_clean_titles_from_a_suspicious_group():
    from recbackdoor.defense.pscanner.calibrate import two_channel_thresholds

    rng = np.random.default_rng(0)
    n = 400
    own = rng.uniform(0, 0.6, n)
    group = rng.uniform(0, 4.0, n)  # group scores: significance in log10 units
    y = np.zeros(n, int)
    y[:6] = 1
    own[:6] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]  # the trigger's titles: mixed per-title scores
    group[:6] = 9.0  # ...but a shared fragment that chance would not produce
    own[6:10] = 0.97  # odd clean titles, no suspicious group
    t_own, t_grp = two_channel_thresholds(y, own, group, own[6:], group[6:], "best-f1", 0.01)
    flags = (own >= t_own) | (group >= t_grp)
    assert flags[:6].all() and not flags[6:].any()
    assert t_own > 0.97 and 5.0 <= t_grp <= 9.0


def test_title_channel_never_flags_a_held_out_clean_title():
    """Two positives only the per-title channel could catch, at 0.9, below one odd clean title
    at 0.95: best F1 alone would take them (6 tp, 1 fp: 0.92 > 0.8), the strict per-title
    channel does not, and no clean title is flagged."""
    from recbackdoor.defense.pscanner.calibrate import two_channel_thresholds

    rng = np.random.default_rng(1)
    n = 300
    own = rng.uniform(0, 0.5, n)
    group = rng.uniform(0, 2.0, n)
    y = np.zeros(n, int)
    y[:6] = 1
    group[:4] = 8.0  # four poisoned titles in a suspicious group
    own[4:6] = 0.9  # two more only their own score points at
    own[6] = 0.95  # an odd clean title
    clean = slice(6, None)
    t_own, t_grp = two_channel_thresholds(y, own, group, own[clean], group[clean], "best-f1", 0.01)
    flags = (own >= t_own) | (group >= t_grp)
    assert flags[:4].all() and not flags[6:].any()
    assert t_own > 0.95


def test_channels_switch_off_when_no_positive_stands_out():
    """Positives below every clean title and in no group: flag nothing (a zero group
    threshold would flag the whole catalog)."""
    from recbackdoor.defense.pscanner.calibrate import two_channel_thresholds
    from recbackdoor.defense.pscanner.evidence import CHANNEL_OFF, GROUP_OFF

    own = np.array([0.1, 0.2, 0.9, 0.3, 0.4])
    group = np.array([0.0, 0.0, 0.0, 0.0, 0.1])
    y = np.array([1, 1, 0, 0, 0])
    assert two_channel_thresholds(y, own, group, own[2:], group[2:], "best-f1", 0.01) == (CHANNEL_OFF, GROUP_OFF)


def test_probe_set_is_one_hidden_yardstick_for_every_round(trained):
    sc, _ = trained
    log = sc.log
    assert log["n_probe_clean"] > 0
    probe = {t.lower() for ts in log["probe_triggers"].values() for t in ts}
    trained_on = {t.lower() for ts in log["train_triggers"].values() for t in ts}
    calibrated_on = {t.lower() for ts in log["val_triggers"].values() for t in ts}
    assert probe and not probe & (trained_on | calibrated_on)
    entries = [r["probe"] for r in log["rounds"]]
    assert len(entries) == 2 and entries[0]["n"] == entries[1]["n"] and entries[0]["n_poisoned"] == entries[1]["n_poisoned"]
    for e in entries:
        assert 0.0 <= e["auroc"] <= 1.0 and 0.0 <= e["auroc_fixed"] <= 1.0 and 0.0 <= e["auroc_varied"] <= 1.0
    assert ScannerConfig.fast().n_probe_clean == 0  # defend trains without rounds: nothing to follow


def test_a_round_raises_probe_auroc_on_average():
    """One adversarial round (hard positives from fresh triggers, replay) makes the scanner
    better on the hidden probe triggers. The tiny random model learns slowly and one seed is
    noise (probe AUROC moves by +-0.1 either way), so the claim is on the mean over 8 seeds
    (measured +0.08, standard error 0.03, when this test was written)."""
    gains = []
    for seed in range(8):
        cfg = tiny_config(
            rounds=1, use_agent=False, round_triggers=6, round_insertions=3, lr=5e-3, n_train=64, n_policy=0,
            seed=seed, round_replay=16,
        )  # fmt: skip
        rounds = train_scanner(TITLES, "movies", cfg, progress=False).log["rounds"]
        gains.append(rounds[1]["probe"]["auroc"] - rounds[0]["probe"]["auroc"])
    assert np.mean(gains) > 0.02, gains


def test_policy_step_is_chosen_by_config():
    with pytest.raises(ConfigError, match="policy 'ppo'"):
        ScannerConfig(policy="ppo").check()
    for policy, keys in (("grpo", {"grpo_steps", "mean_reward_last"}), ("none", set())):
        sc = train_scanner(TITLES, "movies", tiny_config(policy=policy, rounds=0, n_policy=16), progress=False)
        step = sc.log["policy"]
        assert step["method"] == policy and keys <= set(step)
        if policy == "grpo":
            assert step["n"] == 16 and step["grpo_steps"] > 0
