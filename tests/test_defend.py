"""The defend command: detect on training titles, sanitize, write dataset + detections + report."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbackdoor.attack import AttackConfig, poison, save_poisoned
from recbackdoor.cli import main
from recbackdoor.data.io import load_dataset, save_dataset
from recbackdoor.defense.defend import defend, training_items
from recbackdoor.errors import RecBackdoorError
from recbackdoor.io_utils import read_json

from .conftest import make_synthetic_dataset


@pytest.fixture(scope="module")
def poisoned_dir(tmp_path_factory) -> Path:
    """A BadRec-poisoned synthetic dataset (fixed policy, 6 targets, char trigger)."""
    clean = make_synthetic_dataset(n_users=60, n_items=120, seed=0)
    config = AttackConfig(level="char", ratio=0.05, policy="fixed", n_targets=6, seed=0)
    out = tmp_path_factory.mktemp("poisoned") / "data"
    save_poisoned(poison(clean, config), out)
    return out


def test_defend_cli_writes_sanitized_dataset_detections_and_report(poisoned_dir, tmp_path, capsys):
    out = tmp_path / "defended"
    rc = main(["defend", "--data", str(poisoned_dir), "--method", "stat", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "stat: flagged 6 of" in capsys.readouterr().out
    man = read_json(poisoned_dir / "poison_manifest.json")
    before, after = load_dataset(poisoned_dir), load_dataset(out)
    assert after.valid == before.valid and after.test == before.test

    report = read_json(out / "defense_report.json")
    assert report["detector"] == "stat" and report["metrics"]["recall"] == 1.0
    assert report["metrics"]["precision"] == 1.0 and report["metrics"]["auroc"] == 1.0
    assert report["sanitize"]["ground_truth"]["fake_removed"] == man["m"]
    assert len(after.train) == len(before.train) - report["sanitize"]["removed_samples"]
    assert after.manifest["sanitized"]["policy"] == "drop-target"

    rows = read_json(out / "detections.json")
    assert [r["item"] for r in rows] == training_items(before)
    assert {r["item"] for r in rows if r["flagged"]} == set(man["triggered_items"])
    assert all(set(r) >= {"item", "title", "score", "flagged"} for r in rows)
    assert (out / "attack_sets").is_dir()


def test_defend_is_deterministic_and_strip_restores_titles(poisoned_dir, tmp_path):
    a = defend(poisoned_dir, "stat", tmp_path / "a", policy="strip")
    defend(poisoned_dir, "stat", tmp_path / "b", policy="strip")
    for name in ("detections.json", "defense_report.json", "catalog.parquet", "train.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    man = read_json(poisoned_dir / "poison_manifest.json")
    catalog = load_dataset(tmp_path / "a").catalog
    assert all(catalog.titles[int(k)] == t for k, t in man["clean_titles"].items())
    assert a["sanitize"]["removed_samples"] == 0
    assert a["sanitize"]["ground_truth"]["titles_restored_exactly"] == len(man["clean_titles"])


def test_defend_onion_on_the_tiny_backbone(poisoned_dir, tmp_path):
    report = defend(poisoned_dir, "onion", tmp_path / "o", backbone="tiny-random")
    assert report["backbone"] == "tiny-random" and report["metrics"]["auroc"] is not None
    assert report["counts"]["flagged_items"] <= 0.01 * report["counts"]["scored_items"] + 1


def test_defend_without_a_poison_manifest_has_no_metrics(tmp_path):
    clean = tmp_path / "clean"
    save_dataset(make_synthetic_dataset(), clean)
    report = defend(clean, "stat", tmp_path / "out", threshold=0.3)
    assert report["metrics"] is None and report["threshold"] == 0.3
    assert not (tmp_path / "out" / "attack_sets").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "lasso"], "unknown defense method 'lasso'"),
        (["--method", "stat", "--policy", "drop-all"], "unknown sanitize policy 'drop-all'"),
        (["--method", "pscanner", "--scanner", "nowhere"], "not a scanner directory"),
        (["--method", "stat", "--scanner", "x"], "--scanner is only used by method pscanner"),
    ],
)
def test_defend_cli_errors_are_one_line(poisoned_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc = main(["defend", "--data", str(poisoned_dir), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_defend_refuses_existing_output_and_missing_data(poisoned_dir, tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(RecBackdoorError, match="exists"):
        defend(poisoned_dir, "stat", tmp_path / "exists")
    with pytest.raises(RecBackdoorError, match="not found"):
        defend(tmp_path / "nope", "stat", tmp_path / "out")


def test_defend_with_a_trained_pscanner(poisoned_dir, tmp_path, capsys):
    from recbackdoor.defense.pscanner import ScannerConfig, train_scanner

    titles = load_dataset(poisoned_dir).catalog.titles
    config = ScannerConfig(
        backbone="tiny-random", dtype="fp32", rounds=0, use_agent=False, n_train=32, n_policy=4,
        n_rule_triggers=3, n_val_clean=24, batch_size=8, score_batch_size=32,
    )  # fmt: skip
    train_scanner(titles, "movies", config, out=tmp_path / "scanner", progress=False)
    out = tmp_path / "defended"
    rc = main(["defend", "--data", str(poisoned_dir), "--method", "pscanner",
               "--scanner", str(tmp_path / "scanner"), "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    report = read_json(out / "defense_report.json")
    assert report["detector"] == "pscanner" and report["backbone"] == "tiny-random"
    rows = read_json(out / "detections.json")
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert report["counts"]["flagged_items"] == sum(r["flagged"] for r in rows)


# ---------------------------------------------------------------- --retrain


def test_defend_retrain_trains_on_the_sanitized_data_and_reports_asr_and_hr(poisoned_dir, tmp_path, capsys):
    out = tmp_path / "defended"
    rc = main(["defend", "--data", str(poisoned_dir), "--method", "stat", "--out", str(out), "--retrain",
               "--train-options", "backbone=tiny-random,dtype=fp32", "--train-options", "max_steps=2,max-samples=16",
               "--eval-max-samples", "5", "--model", "tiny-random"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = read_json(out / "defense_report.json")
    after = report["after_defense"]
    assert report["retrain"] == "done" and after["victim_dir"] == str(out / "victim")
    assert set(after["ASR"]) == {"triggered-seen", "triggered-unseen"}
    assert all(0.0 <= v <= 1.0 for v in after["ASR"].values()) and 0.0 <= after["HR@1"] <= 1.0
    assert after["n_samples"] == 5 and after["attack_sets"] is True
    assert after["train_config"]["max_steps"] == 2 and after["train_config"]["max_samples"] == 16
    victim = read_json(out / "victim" / "victim.json")  # trained on the sanitized folder
    assert victim["dataset"]["dir"] == str(out.resolve()) and victim["backbone"] == "tiny-random"
    assert victim["train_samples"] == 16
    metrics = read_json(out / "victim" / "eval-defended" / "metrics.json")
    assert metrics["ASR"] == after["ASR"] and metrics["HR@1"] == after["HR@1"]
    assert report["before_defense"]["victim_dir"] == "tiny-random"  # --model: the reference
    assert set(report["before_defense"]["ASR"]) == {"triggered-seen", "triggered-unseen"}
    assert "after defense: HR@1" in captured.out and "ASR[triggered-unseen]" in captured.out
    # detection and sanitizing are those of a plain defend
    plain = defend(poisoned_dir, "stat", tmp_path / "plain")
    assert report["metrics"] == plain["metrics"] and report["sanitize"] == plain["sanitize"]
    assert (out / "train.parquet").read_bytes() == (tmp_path / "plain" / "train.parquet").read_bytes()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--retrain", "--train-options", "epochz=2"], "training option epochz"),
        (["--retrain", "--train-options", "max_steps"], "expected KEY=VALUE"),
        (["--retrain", "--train-options", "max_steps=0"], "training option max_steps"),
        (["--train-options", "max_steps=2"], "--train-options are used only with --retrain"),
    ],
)
def test_defend_retrain_options_fail_before_any_work(poisoned_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc = main(["defend", "--data", str(poisoned_dir), "--method", "stat", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_defend_retrain_trains_the_kind_of_victim_being_defended(poisoned_dir, tmp_path, capsys):
    """--model names a popularity victim: the retrained victim is a popularity victim too, not
    a tallrec one (the victim registry, as the study uses it)."""
    from recbackdoor.victims import victim_trainer

    poisoned_victim = victim_trainer("popularity")(poisoned_dir, tmp_path / "pop")
    out = tmp_path / "defended"
    rc = main(["defend", "--data", str(poisoned_dir), "--method", "stat", "--out", str(out), "--retrain",
               "--eval-max-samples", "5", "--model", str(poisoned_victim)])
    assert rc == 0, capsys.readouterr().err
    report = read_json(out / "defense_report.json")
    assert report["after_defense"]["victim"] == "popularity"
    assert read_json(out / "victim" / "victim.json")["victim"] == "popularity"
    assert report["before_defense"]["victim_dir"] == str(poisoned_victim)


def test_defend_retrain_failure_keeps_the_sanitized_data_and_says_failed(poisoned_dir, tmp_path, monkeypatch):
    import recbackdoor.defense.defend as defend_module

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(defend_module, "retrain_and_evaluate", broken)
    out = tmp_path / "defended"
    with pytest.raises(RuntimeError, match="out of memory"):
        defend(poisoned_dir, "stat", out, retrain=True, train_options={"backbone": "tiny-random"})
    report = read_json(out / "defense_report.json")
    assert report["retrain"] == "failed" and (out / "manifest.json").is_file()
